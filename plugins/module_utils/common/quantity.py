# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kubernetes-style quantities, parsed once for the whole collection.

``cpu_millis("1.5")`` is 1500, ``cpu_millis("250m")`` is 250; ``to_bytes("1.5Gi")`` is
1610612736, ``to_bytes("512M")`` is 512000000. Both raise ValueError on anything else.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)$")
BYTES = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?$")
BYTE_FACTORS = {None: 1, "k": 10 ** 3, "K": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12,
                "P": 10 ** 15, "E": 10 ** 18, "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30,
                "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
CPU_DESC = 'a CPU quantity such as "250m", "0.5" or "2"'
BYTES_DESC = 'a size such as "256Mi", "1.5Gi" or "512M"'


def cpu_millis(text):
    """Millicores of a CPU quantity ("250m", "0.5", 2); ValueError when it is not one."""
    match = CPU.match(str(text).strip()) if not isinstance(text, bool) else None
    if not match:
        raise ValueError("not a CPU quantity: %r" % (text,))
    number = Fraction(match.group(1))
    return int(math.ceil(number if match.group(2) else number * 1000))


def to_bytes(text):
    """Bytes of a size ("256Mi", "1.5Gi", "512M", 1024); ValueError when it is not one."""
    match = BYTES.match(str(text).strip()) if not isinstance(text, bool) else None
    if not match:
        raise ValueError("not a size: %r" % (text,))
    return int(math.ceil(Fraction(match.group(1)) * BYTE_FACTORS[match.group(2)]))


def cpus(millis):
    """Docker's ``cpus`` notation of a millicore count (1500 -> "1.5")."""
    return ("%.3f" % (millis / 1000.0)).rstrip("0").rstrip(".")
