#!/usr/bin/env python3
"""demo.sh --headless: a student at the demo's lab PC (a QEMU guest).

    lab_pc.py --qmp SOCKET --serial FILE --user NAME --password PW --shots DIR
    lab_pc.py --qmp SOCKET --serial FILE --shots DIR --login-screen-only

Waits until the greeter says its login screen is up (on the PC's serial
console), checks the screen shows it, types the user name and password with
QMP key presses, opens the first desktop with Enter, and waits until the
screen shows the test guest's desktop. Saves lab-pc-login.png and
lab-pc-desktop.png in DIR. Exits 0 when the desktop is on screen, 1 with what
went wrong otherwise. With --login-screen-only it stops once the login screen
is checked and saved (tests/integration/pxe_setup_test.sh's Secure Boot PC).
"""
import argparse
import json
import os
import socket
import struct
import sys
import time
import zlib


class Qmp:
    def __init__(self, path, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.file = self.sock.makefile("rw")
        self.file.readline()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command, arguments=None):
        message = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "error" in reply:
                raise RuntimeError("QMP %s: %s" % (command, reply["error"]["desc"]))
            if "return" in reply:
                return reply["return"]

    def press(self, *qcodes):
        self.execute("send-key", {"keys": [{"type": "qcode", "data": q} for q in qcodes],
                                  "hold-time": 50})
        # QEMU's PS/2 queue is short and a TCG guest reads it slowly: one key
        # at a time, as a person types.
        time.sleep(0.25)

    def type(self, text):
        for c in text:
            if c.isalpha():
                self.press("shift", c.lower()) if c.isupper() else self.press(c)
            elif c.isdigit():
                self.press(c)
            elif c == "-":
                self.press("minus")
            elif c == ".":
                self.press("dot")
            elif c == "_":
                self.press("shift", "minus")
            else:
                raise ValueError("lab_pc.py cannot type %r" % c)


def screen(qmp, ppm):
    """The PC's screen now: (width, height, pixels as bytes RGB)."""
    qmp.execute("screendump", {"filename": ppm})
    data = open(ppm, "rb").read()
    magic, size, depth, pixels = data.split(b"\n", 3)
    width, height = map(int, size.split())
    return width, height, pixels


def shares(width, height, px):
    """Percent of the greeter's blue, the guest's VGA blue (#0000AA), white."""
    greeter = vga = white = 0
    step = 3 * 7  # every 7th pixel is plenty for shares of the screen
    for i in range(0, width * height * 3, step):
        r, g, b = px[i], px[i + 1], px[i + 2]
        if r < 24 and g < 24 and b > 140:
            vga += 1
        elif r > 200 and g > 200 and b > 200:
            white += 1
        elif b > r + 30 and b > g + 20:
            greeter += 1
    n = (width * height * 3 + step - 1) // step
    return 100.0 * greeter / n, 100.0 * vga / n, 100.0 * white / n


def save_png(width, height, px, path):
    raw = b"".join(b"\0" + px[y * width * 3:(y + 1) * width * 3] for y in range(height))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n"
                + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def wait_serial(path, text, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if text in open(path, errors="replace").read():
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.5)
    return False


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--qmp", required=True)
    p.add_argument("--serial", required=True)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--shots", required=True)
    p.add_argument("--login-screen-only", action="store_true")
    a = p.parse_args()
    if not a.login_screen_only and (a.user is None or a.password is None):
        p.error("--user and --password are needed unless --login-screen-only is given")
    os.makedirs(a.shots, exist_ok=True)
    ppm = os.path.join(a.shots, "lab-pc.ppm")

    if not wait_serial(a.serial, "The login screen is up.", 300):
        print("lab_pc.py: the greeter did not say its login screen is up within 5 minutes.",
              file=sys.stderr)
        return 1
    qmp = Qmp(a.qmp)
    deadline = time.monotonic() + 30
    while True:
        w, h, px = screen(qmp, ppm)
        greeter, vga, white = shares(w, h, px)
        if greeter > 60 and white > 5 or time.monotonic() > deadline:
            break
        time.sleep(1)
    save_png(w, h, px, os.path.join(a.shots, "lab-pc-login.png"))
    if not (greeter > 60 and white > 5):
        print("lab_pc.py: the screen is not the login screen (%.0f%% greeter blue, %.0f%% white)."
              % (greeter, white), file=sys.stderr)
        return 1
    if a.login_screen_only:
        print("  lab PC: the login screen is up (%dx%d, %.0f%% greeter blue, %.0f%% white)"
              % (w, h, greeter, white))
        return 0
    print("  lab PC: the login screen is up (%dx%d); typing %s's user name and password"
          % (w, h, a.user))

    signed_in = "%s is signed in; the desktop list is up" % a.user
    for attempt in range(2):
        if attempt:
            qmp.press("esc")  # a key lost on a busy machine: clear the form, type again
            time.sleep(2)
        qmp.type(a.user)
        qmp.press("ret")
        qmp.type(a.password)
        qmp.press("ret")
        if wait_serial(a.serial, signed_in, 90):
            break
    else:
        print("lab_pc.py: %s was not signed in after typing the login twice." % a.user,
              file=sys.stderr)
        return 1
    # Enter opens the first desktop on the list. The list is drawn again
    # when the broker's events arrive, and an Enter pressed in between can
    # go unseen on a slow (TCG) PC: as a student would, press it again while
    # the list is still what the screen shows.
    time.sleep(2)
    qmp.press("ret")
    opened = time.monotonic()
    deadline = opened + 240
    while True:
        w, h, px = screen(qmp, ppm)
        greeter, vga, white = shares(w, h, px)
        if (vga > 15 and white > 2 and greeter < 1) or time.monotonic() > deadline:
            break
        # (The greeter ignores Enter while it connects, so pressing again
        # is harmless; only while its own screen is up, not the desktop's.)
        if greeter > 60 and time.monotonic() - opened > 25:
            qmp.press("ret")
            opened = time.monotonic()
        time.sleep(2)
    save_png(w, h, px, os.path.join(a.shots, "lab-pc-desktop.png"))
    os.remove(ppm)
    if not (vga > 15 and white > 2 and greeter < 1):
        print("lab_pc.py: the screen never showed the desktop (%.0f%% guest blue, %.0f%% white, "
              "%.0f%% greeter blue)." % (vga, white, greeter), file=sys.stderr)
        return 1
    print("  lab PC: %s's desktop is on its screen (%.0f%% guest blue, %.0f%% white text); "
          "screenshots in %s" % (a.user, vga, white, a.shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
