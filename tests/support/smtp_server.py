"""A real SMTP server for the alert tests (aiosmtpd).

Usage: smtp_server.py PORT OUTFILE [REFUSE]

Refuses (accepts and closes) the first REFUSE connections, then serves SMTP
on PORT, appending one JSON object per received message to OUTFILE:
{"from": ..., "to": [...], "data": "<the whole message>"}.
Prints "ready" once it listens. Runs until killed.
"""
import asyncio
import json
import socket
import sys

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, path):
        self.path = path

    async def handle_DATA(self, server, session, envelope):
        with open(self.path, "a") as f:
            f.write(json.dumps({
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode("utf-8", "replace"),
            }) + "\n")
        return "250 OK"


def main():
    port, out = int(sys.argv[1]), sys.argv[2]
    refuse = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if refuse:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(16)
        print("ready", flush=True)
        for _ in range(refuse):
            conn, _ = s.accept()
            conn.close()
        s.close()
    controller = Controller(Recorder(out), hostname="127.0.0.1", port=port)
    controller.start()
    if not refuse:
        print("ready", flush=True)
    try:
        asyncio.get_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
