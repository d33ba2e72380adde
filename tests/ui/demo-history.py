#!/usr/bin/env python3
"""Writes a demo history file for the README screenshots: thirty days of
state changes of web.payments (a few outages, a maintenance-like mute) and
two weeks of nightly runs of cron.nightly-report (the last one failing with
exit 2) in the history store's schema, beside the demo database.

    python3 tests/ui/demo-history.py /tmp/lovebeat-demo.db.history

Run it on the file a first start of the demo daemon made (with its
tables), with the daemon stopped (docs/README.md). The tables are
src/history/schema.rs's; states are 1 ok, 2
error, 3 muted; reasons 0 created, 1 timeout, 2 fail, 3 beat, 4 mute, 5 unmute.
"""
import random
import sqlite3
import sys
import time

random.seed(11)
DAY = 86_400_000
now = int(time.time() * 1000)
db = sqlite3.connect(sys.argv[1])
db.execute("INSERT INTO names (id, kind, name) VALUES (1000, 0, 'web.payments')")
rows = [(now - 30 * DAY, None, 1, 0)]
t = now - 30 * DAY
while True:
    t += random.randint(DAY // 2, 4 * DAY)
    if t > now - DAY // 2:
        break
    if random.random() < 0.2:
        rows.append((t, 1, 3, 4))
        t += random.randint(1_800_000, 7_200_000)
        rows.append((t, 3, 1, 5))
    else:
        rows.append((t, 1, 2, 1))
        t += random.randint(120_000, 5_400_000)
        rows.append((t, 2, 1, 3))
rows.append((now - 600_000, 1, 2, 1))
for seq, (ts, frm, to, why) in enumerate(rows, 1):
    db.execute("INSERT INTO changes VALUES (1000, ?, ?, ?, ?, ?, NULL)", (ts, seq, frm, to, why))
db.execute("INSERT INTO lifecycle (started, last_seen, stopped) VALUES (?, ?, ?)",
           (now - 31 * DAY, now - 60_000, now - 60_000))
# cron.nightly-report: a run a night, the last one (51 minutes ago, as
# demo-db.py's last failure) failing with exit 2.
db.execute("INSERT INTO names (id, kind, name) VALUES (1001, 0, 'cron.nightly-report')")
last = now - 51 * 60_000
db.execute("INSERT INTO changes VALUES (1001, ?, 1, NULL, 1, 0, NULL)", (now - 30 * DAY,))
db.execute("INSERT INTO changes VALUES (1001, ?, 2, 1, 2, 2, 2)", (last,))
for night in range(13, -1, -1):
    ended = last - night * DAY
    took = random.randint(1_500_000, 2_400_000)
    failed = night == 0
    db.execute(
        "INSERT INTO runs (name_id, started, ended, exit_code, ok, ran_too_long, output) "
        "VALUES (1001, ?, ?, ?, ?, 0, ?)",
        (ended - took, ended, 2 if failed else 0, 0 if failed else 1,
         "fetching sales...\nTraceback (most recent call last):\n  File \"nightly.py\", line 88\n"
         "KeyError: 'region'\n" if failed else None))
db.commit()
