#!/usr/bin/env python3
"""Writes a demo history for the status page screenshot: a year of state
changes of the alarms web, api and payments and the service db.main
(a few outages each, more for payments), in the history store's schema.

    python3 tests/ui/demo-status.py /tmp/lovebeat-status-demo.db.history

Run it on the file a first start of the demo daemon made (with its
tables), with the daemon stopped (docs/README.md). States are 1 ok,
2 error; reasons 0 created, 1 timeout, 3 beat, 8 members failed,
9 recovered.
"""
import random
import sqlite3
import sys
import time

random.seed(7)
DAY = 86_400_000
now = int(time.time() * 1000)
db = sqlite3.connect(sys.argv[1])
seq = 1
for id_, kind, name, every in [(2000, 1, "web", 40), (2001, 1, "payments", 12),
                               (2002, 1, "api", 30), (2003, 0, "db.main", 60)]:
    db.execute("INSERT INTO names (id, kind, name) VALUES (?, ?, ?)", (id_, kind, name))
    t = now - 366 * DAY
    rows = [(t, None, 1, 0)]
    while True:
        t += random.randint(DAY, 2 * every * DAY)
        if t > now - DAY:
            break
        down = random.choice([120_000, 600_000, 1_800_000, 5_400_000, 14_400_000])
        rows.append((t, 1, 2, 1 if kind == 0 else 8))
        rows.append((t + down, 2, 1, 3 if kind == 0 else 9))
        t += down
    for ts, frm, to, why in rows:
        db.execute("INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, NULL)",
                   (id_, ts, seq, frm, to, why))
        seq += 1
db.execute("INSERT INTO lifecycle (started, last_seen, stopped) VALUES (?, ?, ?)",
           (now - 367 * DAY, now - 60_000, now - 60_000))
db.commit()
