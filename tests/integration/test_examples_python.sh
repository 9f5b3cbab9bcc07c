#!/usr/bin/env bash
# examples/python/app.py (ASGI) under uvicorn --fd 3 says READY=1 from its
# lifespan startup, runs under portshare run --ready notify (its socket
# with TCP_DEFER_ACCEPT, ?defer=1) and loses
# nothing in 5 reloads under connection-close load, and in 2 more under
# keep-alive load.  (gunicorn: test_run_gunicorn.sh.)
. "$(dirname "$0")/examples_lib.sh"
need curl jq
# Debian's python3-uvicorn installs the module but no uvicorn script; a
# python3 first in PATH (pyenv, a venv) may not see it
PY=
for p in python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null && "$p" -c 'import uvicorn' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || skip "uvicorn is not installed for python3 (Debian package python3-uvicorn)"

sup_start uv -l "127.0.0.1:0?defer=1" -w 2 --ready notify -- "$PY" -m uvicorn --fd 3 --app-dir "$EX/python" --no-access-log app:app
grep -q 'ready (READY=1)' "$T/uv.log" || fail "the uvicorn example did not say READY=1: $(grep worker_ready "$T/uv.log")"
answers 1 uvicorn
reloads_under_load uv uvicorn 5
answers 6 uvicorn
reloads_under_load uv uvicorn 2 --keepalive
answers 8 uvicorn
