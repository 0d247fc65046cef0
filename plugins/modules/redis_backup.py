#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ansible module opsdeck.stack.redis_backup."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_backup
short_description: Back up and restore Redis over the Redis protocol (RDB snapshots and key exports)
version_added: 0.1.0
description:
  - Takes consistent backups of a Redis server that may run in a container or a Kubernetes pod,
    with no access to the server's file system, and restores key exports.
  - "O(mode=snapshot): a full, point-in-time RDB streamed the way C(redis-cli --rdb) gets it
    (C(REPLCONF capa eof), C(REPLCONF rdb-only 1), C(SYNC)); both the C($<length>) form and the
    diskless C($EOF:<mark>) form are handled. The file contains every database of the server."
  - "O(mode=keys): a portable export of key patterns (for example C(app:config:*)) with SCAN,
    pipelined PEXPIRETIME (PTTL before Redis 7) and DUMP. It works where replication commands
    are not allowed (managed services, restricted ACL users) and can be restored online into
    another server with O(state=restored). It is not a point-in-time image: keys are read one
    page at a time while the server keeps running."
  - "O(mode=bgsave): only make the server write its own RDB on its own disk (BGSAVE; a save that
    is already running is joined, not fought). O(bgsave=true) does the same before a snapshot or
    key export."
  - Every backup file is written to a temporary file in O(dest), fsynced, renamed into place and
    the directory fsynced, so a failed or interrupted backup leaves no file behind. A
    C(<file>.sha256) file in C(sha256sum) format is written beside it (C(sha256sum -c) checks
    it). Files are created with mode C(0600).
  - Memory use is constant whatever the size of the data (fixed-size chunks; the snapshot's
    sha256 is computed while streaming).
  - "Backups are recorded in a manifest, C(.redis_backup_manifest.json) in O(dest), written
    atomically. Retention (O(retention_count), O(retention_days)) only ever deletes files listed
    in that manifest with the same O(name_prefix) and O(mode); other files in O(dest) are never
    touched."
  - "Key export format (version 1): the magic line C(OPSDECK-REDIS-KEYS), a big-endian u32
    header length and a JSON header (redis_version, rdb_version read from the footer of the DUMP
    payloads, db, patterns, record count, times), then records
    C(K <u32 key length> <i64 expire-at ms> <u64 payload length> <key> <DUMP payload>) and an end
    marker C(E <u64 record count>); the records are gzip-compressed when O(compress=true)."
  - "TTLs: a key export stores the absolute Unix time in milliseconds at which each key expires,
    on the source server's clock (PEXPIRETIME on Redis 7 and later, exact; TIME + PTTL in the same
    pipeline before, so up to a few milliseconds early, never late). The restore uses RESTORE ...
    ABSTTL, so the time spent in the backup counts against the TTL: keys that expired meanwhile
    are not restored and are counted as RV(expired). Clock skew between the two servers is carried
    over."
author:
  - opsdeck maintainers (@opsdeck)
extends_documentation_fragment:
  - opsdeck.stack.attributes
attributes:
  idempotent:
    support: partial
    details:
      - With O(state=present) every run writes a new backup (that is its purpose) and reports a
        change. With O(state=restored) and O(replace=false), a second run restores nothing and
        reports no change.
options:
  host:
    description: Redis host name or address. Ignored when O(unix_socket) is set.
    type: str
    default: 127.0.0.1
  port:
    description: Redis TCP port.
    type: int
    default: 6379
  unix_socket:
    description: Path of a Redis unix socket, used instead of O(host) and O(port).
    type: path
  username:
    description: ACL user name (Redis 6 and later). Without it the C(default) user is used.
    type: str
  password:
    description: Password of O(username), or of the default user.
    type: str
  tls:
    description: Connect with TLS.
    type: bool
    default: false
  validate_certs:
    description: Verify the server certificate and host name when O(tls=true).
    type: bool
    default: true
  ca_path:
    description: CA certificate bundle (PEM) that signed the server certificate.
    type: path
  client_cert:
    description: Client certificate (PEM) for servers that require one (C(tls-auth-clients yes)).
    type: path
  client_key:
    description: Private key of O(client_cert), if not in the same file.
    type: path
  db:
    description:
      - Database index for O(mode=keys) and for O(state=restored).
      - A snapshot always contains every database.
    type: int
    default: 0
  timeout:
    description:
      - Socket timeout in seconds, for each network operation (a server silent for longer fails
        the run). While the server prepares a snapshot it sends keep-alives, so this does not
        bound the total duration.
    type: float
    default: 30
  mode:
    description:
      - What to back up with O(state=present). See the description.
      - Ignored with O(state=restored), where the kind of O(src) is detected from its content.
    type: str
    choices: [snapshot, keys, bgsave]
    default: snapshot
  state:
    description:
      - V(present) writes a new backup into O(dest).
      - V(restored) loads the key export O(src) into the server with RESTORE.
    type: str
    choices: [present, restored]
    default: present
  dest:
    description:
      - Directory that receives the backup files, created (mode 0700) when missing.
      - Required with O(state=present) unless O(mode=bgsave).
    type: path
  name_prefix:
    description:
      - Start of the backup file names, followed by a UTC time stamp
        (C(<prefix>20250131T235959.123Z.rdb), C(.rdb.gz) or C(.keys)).
      - Retention works per prefix and O(mode), so several backups can share O(dest).
    type: str
    default: redis-
  patterns:
    description:
      - With O(mode=keys), the keys to export. Redis glob patterns (C(*), C(?), C([...]), C(\\))
        are walked with SCAN MATCH; literal key names are read directly without SCAN. A key matched
        by several patterns is exported once.
      - With O(state=restored), an optional filter; only matching records are restored.
    type: list
    elements: str
  src:
    description: Key export to restore, required with O(state=restored).
    type: path
  replace:
    description:
      - With O(state=restored), overwrite keys that already exist (RESTORE ... REPLACE).
      - When false, existing keys are left alone, skipped and listed in RV(skipped_keys).
    type: bool
    default: false
  verify_checksum:
    description:
      - With O(state=restored), check O(src) against C(<src>.sha256) before restoring anything,
        when that file exists.
    type: bool
    default: true
  compress:
    description:
      - Gzip the backup. A snapshot becomes a C(.rdb.gz) file (C(gunzip) restores the RDB); a key
        export compresses its records (the header stays readable).
    type: bool
    default: false
  compress_level:
    description: Gzip level, 1 (fastest) to 9 (smallest).
    type: int
    default: 6
  retention_count:
    description: After a successful backup, keep only this many newest backups of this O(name_prefix) and O(mode).
    type: int
  retention_days:
    description: After a successful backup, delete backups of this O(name_prefix) and O(mode) older than this many days.
    type: int
  scan_count:
    description: COUNT hint given to SCAN (keys examined per call) in O(mode=keys).
    type: int
    default: 1000
  pipeline:
    description: Number of keys per pipelined batch of DUMP (export) or RESTORE (restore) commands.
    type: int
    default: 1000
  bgsave:
    description:
      - Before the backup, make the server write its own RDB (BGSAVE SCHEDULE) and wait until it
        is complete, joining a save that is already running instead of failing.
      - "A save the module starts is complete when C(rdb_bgsave_in_progress:0), C(rdb_saves) has
        grown past its value before BGSAVE (Redis counts a disk save when it starts) and
        C(rdb_last_bgsave_status:ok)."
      - "A save found running is joined: the module waits for it and uses it if it was a disk save
        that succeeded (C(rdb_last_save_time) moved). A running child can also be a diskless
        replication transfer that writes nothing to disk; then the module starts its own save
        once it ends."
      - A snapshot does not need this (SYNC makes its own fork).
    type: bool
    default: false
  bgsave_timeout:
    description: Seconds to wait for the server-side save of O(bgsave) or O(mode=bgsave).
    type: int
    default: 3600
notes:
  - "Snapshots need the replication commands: an ACL user needs C(+sync +psync +replconf). Managed
    services usually refuse them; the module then fails with a message pointing to O(mode=keys)."
  - "Key exports need C(+scan +dump +pexpiretime) (C(+pttl) before Redis 7) and read access to the
    keys; restores need C(+restore) (and C(+exists) in check mode) and write access."
  - "A key export refuses to restore DUMP payloads from a newer Redis (higher RDB version in the
    payload footer than the target supports), with a message naming both versions."
  - "An RDB snapshot is restored by stopping Redis, putting the file in place of its dbfilename
    and starting it; O(state=restored) with an RDB explains this and changes nothing."
  - "A key export is not a point-in-time image. SCAN returns every key that exists for the whole
    export; keys created or deleted meanwhile may or may not be included, and a key can be returned
    twice if the keyspace is resized during the export. Such a key is written twice; on restore the
    second copy is counted in RV(skipped_existing) (or replaces the first with O(replace=true))."
  - Redis Cluster is not handled as a whole; point the module at each primary.
  - In check mode the module connects and authenticates, then reports the files it would write
    (RV(would_write)) and delete (RV(would_delete)) without writing anything, and for a restore
    how many keys it would restore or skip (EXISTS only).
seealso:
  - name: Redis persistence
    description: RDB and AOF persistence, BGSAVE.
    link: https://redis.io/docs/latest/operate/oss_and_stack/management/persistence/
"""

EXAMPLES = r"""
- name: Stream a full RDB snapshot of the Redis pod (through a port-forward or a Service)
  opsdeck.stack.redis_backup:
    host: redis.shop.svc
    password: "{{ vault_redis_password }}"
    dest: /var/backups/redis
    retention_count: 14
    retention_days: 30

- name: Export the tenants' configuration keys (works on managed Redis too)
  opsdeck.stack.redis_backup:
    host: 127.0.0.1
    port: 6379
    password: "{{ vault_redis_password }}"
    mode: keys
    patterns:
      - "app:config:*"
    dest: /var/backups/redis-config
    name_prefix: vf-config-
    compress: true
  register: config_backup

- name: Restore one tenant's configuration into its dedicated instance, keeping keys that exist
  opsdeck.stack.redis_backup:
    host: redis-tenant1.example.internal
    password: "{{ vault_tenant1_redis_password }}"
    state: restored
    src: "{{ config_backup.file }}"
    patterns:
      - "app:config:tenant1*"

- name: Make the server persist to its own volume first, then stream a snapshot over TLS
  opsdeck.stack.redis_backup:
    host: redis.example.internal
    port: 6380
    tls: true
    ca_path: /etc/ssl/redis-ca.pem
    username: backup
    password: "{{ vault_redis_backup_password }}"
    bgsave: true
    dest: /var/backups/redis
    compress: true
"""

RETURN = r"""
mode:
  description: The mode that ran (O(state=present)).
  returned: state is present
  type: str
  sample: snapshot
file:
  description: Path of the backup file written (or that would be written in check mode).
  returned: state is present and mode is not bgsave
  type: str
  sample: /var/backups/redis/redis-20250131T235959.123Z.rdb
sha256:
  description: sha256 of the backup file.
  returned: a backup file was written
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
sha256_file:
  description: Path of the checksum file, in sha256sum format.
  returned: a backup file was written
  type: str
  sample: /var/backups/redis/redis-20250131T235959.123Z.rdb.sha256
size:
  description: Size of the backup file in bytes.
  returned: a backup file was written
  type: int
  sample: 104857600
dest_created:
  description: Whether O(dest) did not exist and was created (or would be, in check mode).
  returned: state is present and mode is not bgsave
  type: bool
  sample: false
rdb_size:
  description: Size of the RDB received (before compression).
  returned: mode is snapshot
  type: int
  sample: 104857600
transfer:
  description: How the server sent the RDB, C(bulk) (length first) or C(eof) (diskless, end mark).
  returned: mode is snapshot
  type: str
  sample: eof
rdb_version:
  description: RDB format version of the snapshot or of the exported DUMP payloads (null if no key was exported).
  returned: success
  type: int
  sample: 10
redis_version:
  description: Version of the server the module talked to.
  returned: success
  type: str
  sample: 7.0.15
keys:
  description: Number of keys written to a key export.
  returned: mode is keys
  type: int
  sample: 1200
payload_bytes:
  description: Total size of the DUMP payloads exported.
  returned: mode is keys
  type: int
  sample: 1258291
missing_keys:
  description: Literal key names (no glob) that do not exist (at most 100 listed; see RV(missing_count)).
  returned: mode is keys
  type: list
  elements: str
  sample: ["app:config:tenant9"]
missing_count:
  description: Number of literal key names that do not exist.
  returned: mode is keys
  type: int
  sample: 1
vanished:
  description: Keys returned by SCAN that were deleted before they could be dumped.
  returned: mode is keys
  type: int
  sample: 0
ttl_source:
  description: How expiry times were read, C(pexpiretime) (exact) or C(time+pttl).
  returned: mode is keys
  type: str
  sample: pexpiretime
deleted:
  description: Files deleted by retention (only files listed in the manifest).
  returned: state is present and mode is not bgsave
  type: list
  elements: str
  sample: ["/var/backups/redis/redis-20250101T000000.000Z.rdb", "/var/backups/redis/redis-20250101T000000.000Z.rdb.sha256"]
would_write:
  description: Files check mode would have written.
  returned: check mode, state is present
  type: list
  elements: str
would_delete:
  description: Files check mode would have deleted by retention.
  returned: check mode, state is present
  type: list
  elements: str
manifest:
  description: Path of the manifest that lists the backups this module wrote in O(dest).
  returned: a backup file was written
  type: str
  sample: /var/backups/redis/.redis_backup_manifest.json
bgsave:
  description:
    - Outcome of the server-side save, C(action) is C(triggered), C(scheduled) (started after an
      AOF rewrite) or C(joined) (a disk save was already running and was used).
  returned: bgsave is true or mode is bgsave
  type: dict
  sample: {"action": "triggered", "rdb_saves_before": 4, "rdb_saves": 5, "rdb_last_bgsave_status": "ok"}
restored:
  description: Keys restored.
  returned: state is restored
  type: int
  sample: 1200
skipped_existing:
  description: Keys not restored because they already exist (O(replace=false)).
  returned: state is restored and not check mode
  type: int
  sample: 3
skipped_keys:
  description: The first 100 keys skipped (or that would be skipped in check mode).
  returned: state is restored
  type: list
  elements: str
  sample: ["app:config:tenant1"]
expired:
  description: Records not restored because their key had expired by the time of the restore.
  returned: state is restored
  type: int
  sample: 0
restore_errors:
  description: Records RESTORE rejected (the module then fails); see RV(error_keys).
  returned: state is restored
  type: int
  sample: 0
error_keys:
  description: The first 100 records RESTORE rejected, each with C(key) and C(error).
  returned: state is restored
  type: list
  elements: dict
filtered_out:
  description: Records left out because they do not match O(patterns).
  returned: state is restored
  type: int
  sample: 0
would_restore:
  description: Keys a restore would write.
  returned: check mode, state is restored
  type: int
  sample: 1200
would_skip:
  description: Keys a restore would skip because they exist.
  returned: check mode, state is restored
  type: int
  sample: 0
checksum_verified:
  description: Whether O(src) was checked against its C(.sha256) file before restoring.
  returned: state is restored and verify_checksum is true
  type: bool
  sample: true
records:
  description: Number of records in O(src), from its header.
  returned: state is restored
  type: int
  sample: 1200
source_redis_version:
  description: Redis version that wrote the key export.
  returned: state is restored
  type: str
  sample: 7.0.15
duration:
  description: Seconds the backup or restore took, from connecting to the last fsync.
  returned: success
  type: float
  sample: 12.5
target_rdb_version:
  description: Newest RDB version the target server loads (null if it could not be found out).
  returned: state is restored
  type: int
  sample: 10
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.opsdeck.stack.plugins.module_utils.backup.redis import (
    BackupError,
    run,
)


def argument_spec():
    """The module's options (see DOCUMENTATION)."""
    return dict(
        host=dict(type="str", default="127.0.0.1"),
        port=dict(type="int", default=6379),
        unix_socket=dict(type="path"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        tls=dict(type="bool", default=False),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
        db=dict(type="int", default=0),
        timeout=dict(type="float", default=30),
        mode=dict(type="str", choices=["snapshot", "keys", "bgsave"], default="snapshot"),
        state=dict(type="str", choices=["present", "restored"], default="present"),
        dest=dict(type="path"),
        name_prefix=dict(type="str", default="redis-"),
        patterns=dict(type="list", elements="str"),
        src=dict(type="path"),
        replace=dict(type="bool", default=False),
        verify_checksum=dict(type="bool", default=True),
        compress=dict(type="bool", default=False),
        compress_level=dict(type="int", default=6),
        retention_count=dict(type="int"),
        retention_days=dict(type="int"),
        scan_count=dict(type="int", default=1000),
        pipeline=dict(type="int", default=1000),
        bgsave=dict(type="bool", default=False),
        bgsave_timeout=dict(type="int", default=3600),
    )


def _validate(module):
    p = module.params
    for name in ("scan_count", "pipeline", "bgsave_timeout"):
        if p[name] is not None and p[name] < 1:
            module.fail_json(msg="%s must be at least 1, got %s." % (name, p[name]))
    if p["retention_count"] is not None and p["retention_count"] < 1:
        module.fail_json(msg="retention_count must be at least 1 (the new backup is always kept), got %s."
                         % p["retention_count"])
    if p["retention_days"] is not None and p["retention_days"] < 0:
        module.fail_json(msg="retention_days must not be negative, got %s." % p["retention_days"])
    if not 1 <= p["compress_level"] <= 9:
        module.fail_json(msg="compress_level must be between 1 and 9, got %s." % p["compress_level"])
    if p["db"] < 0:
        module.fail_json(msg="db must not be negative, got %s." % p["db"])
    if p["timeout"] <= 0:
        module.fail_json(msg="timeout must be positive, got %s." % p["timeout"])
    if p["client_key"] and not p["client_cert"]:
        module.fail_json(msg="client_key needs client_cert.")


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("state", "restored", ("src",))],
    )
    _validate(module)
    try:
        result = run(module.params, module.check_mode)
    except BackupError as exc:
        details = dict(exc.details)
        details.pop("msg", None)
        changed = bool(details.pop("changed", False))
        module.fail_json(msg=exc.msg, changed=changed, **details)
    except Exception as exc:  # pylint: disable=broad-except
        module.fail_json(msg="redis_backup failed unexpectedly: %s" % exc, exception=traceback.format_exc())
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
