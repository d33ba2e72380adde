#!/usr/bin/env python3
"""Writes a demo lovebeat database (1.x format) for the README screenshots.

    python3 tests/ui/demo-db.py /tmp/lovebeat-demo.db

then start the daemon with tests/ui/demo.cfg (which reads that file) and run
`node tests/ui/browser.mjs docs` (see docs/README.md).
"""
import gzip
import json
import random
import sys
import time

random.seed(7)
now = int(time.time() * 1000)
services = []


def svc(name, timeout, interval, jitter, state="ok", late=0, muted=False):
    history = [max(1000, int(interval + random.uniform(-jitter, jitter))) for _ in range(40)]
    if late:
        history[-3] = late
    services.append({
        "name": name,
        "last_beat": now - random.randint(1, max(2, interval // 2)),
        "beat_history": history,
        "timeout": timeout,
        "state": state,
        "muted_since": now - 3_600_000 if muted else 0,
        "last_state_change": now - 86_400_000,
    })


svc("backup.db1", 5_400_000, 3_600_000, 240_000, late=5_900_000)
svc("backup.db2", 5_400_000, 3_600_000, 120_000)
svc("backup.files", 90_000_000, 86_400_000, 600_000)
for i in range(1, 5):
    svc(f"web.frontend{i}", -2, 60_000, 3_000)
svc("web.payments", 120_000, 60_000, 2_000, state="error")
for i in range(1, 4):
    svc(f"queue.worker{i}", 30_000, 10_000, 1_500)
svc("queue.mailer", 30_000, 10_000, 9_000, muted=True, state="muted")
svc("cron.nightly-report", -3, 86_400_000, 60_000, state="error")
services[-1].update({
    "schedule": "0 2 * * *",
    "tz": "Europe/Stockholm",
    "grace": 1_800_000,
    "run_history": [int(random.uniform(1_500_000, 2_100_000)) for _ in range(30)],
    "started_at": now - 5_000_000,
    "failed": True,
    "last_failure": {
        "ts": now - 3_100_000,
        "exit_code": 2,
        "output": "fetching sales for 2026-11-24...\nrendering 14 charts\n"
                  "Traceback (most recent call last):\n"
                  "  File \"/opt/reports/nightly.py\", line 88, in <module>\n"
                  "    upload(pdf)\n"
                  "ConnectionError: s3.eu-north-1.amazonaws.com: timed out\n",
    },
})
svc("cron.invoices", -3, 3_600_000, 30_000)
services[-1].update({"schedule": "15 * * * *", "tz": "UTC", "grace": 300_000,
                     "run_history": [int(random.uniform(40_000, 90_000)) for _ in range(50)],
                     "max_runtime": 600_000})

with gzip.open(sys.argv[1], "wt") as f:
    for s in services:
        f.write("SERV\t" + json.dumps(s) + "\n")
