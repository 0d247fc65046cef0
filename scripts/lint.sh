#!/usr/bin/env bash
# ansible-lint (production profile), yamllint and ansible-test sanity, all must be clean.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
status=0

echo "-- ansible-lint --profile production"
ansible-lint --profile production --nocolor -q || status=1

echo "-- ansible-test sanity"
# ansible-test wants the collection at .../ansible_collections/opsdeck/stack as a real
# directory: sanity runs on a copy of the tracked files.
work=$ROOT/build/sanity/ansible_collections/opsdeck/stack
rm -rf "$ROOT/build/sanity" && mkdir -p "$work"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$work"/ 2>/dev/null
( cd "$work" && git init -q . && git add -A >/dev/null 2>&1 )
# ansible-test downloads pip's bootstrap script from a host that is not reachable here:
# give it an equivalent that uses ensurepip.
mkdir -p "$HOME/.ansible/test/cache"
for v in 23_3 24_0 24_1 24_2 24_3 25_0 25_1 25_2 25_3 26_0; do
  cat >"$HOME/.ansible/test/cache/get_pip_$v.py" <<'PY'
import subprocess, sys
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
PY
done
( cd "$work" && ansible-test sanity --local --python 3.11 --color no \
 ) || status=1
exit $status
