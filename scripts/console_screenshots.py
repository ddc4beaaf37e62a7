"""Screenshots of the operator console for the docs: three memories, a few hundred logged predictions.

    PYTHONPATH=src .venv/bin/python scripts/console_screenshots.py --out docs

Runs genba's app on a loopback port (tiny encoder, generated images: coloured shapes with
noise), creates three memories (dmn-tf with thumbnails, tip-adapter, dmn-zs), adds support,
takes a snapshot, serves about 360 predictions over ~20 s with test-time updates, confirms and
corrects a few through the API, then opens /console in headless Chromium (Selenium) and saves
docs/console-overview.png and docs/console-review.png. Needs chromium, chromedriver, selenium.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from PIL import Image, ImageDraw

TOKEN = "console-screenshots-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLASSES = {"ok": (60, 170, 80), "scratch": (200, 60, 50), "dent": (70, 90, 200)}


def image(cls: str, rng: random.Random, size: int = 64) -> bytes:
    """A part photo stand-in: a grey plate with a shape in the class colour, noisy and shifted."""
    base = tuple(int(v * rng.uniform(0.6, 1.0)) for v in CLASSES[cls])
    img = Image.new("RGB", (size, size), tuple(rng.randint(90, 150) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    x, y, r = rng.randint(8, 40), rng.randint(8, 40), rng.randint(8, 18)
    (draw.ellipse if cls != "scratch" else draw.rectangle)((x, y, x + r + (20 if cls == "scratch" else 0), y + r), fill=base)
    for _ in range(60):
        draw.point((rng.randrange(size), rng.randrange(size)), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    from genba.serve import create_app
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    folder = Path(tempfile.mkdtemp(prefix="genba-console-"))
    app = create_app(folder / "site.sqlite", TOKEN, encoders=("tiny",))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base, rng = f"http://127.0.0.1:{port}", random.Random(0)
    names = list(CLASSES)
    memories = [("line 3 (thumbnails)", "dmn-tf", True), ("gate camera", "tip-adapter", False), ("warehouse", "dmn-zs", False)]
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as c:
        ids = []
        for name, method, images in memories:
            memory_id = c.post("/memories", json={"classnames": names, "encoder": "tiny", "method": method, "name": name,
                                                  "log_images": images, "hyperparameters": {}}).json()["id"]
            ids.append(memory_id)
            if method != "dmn-zs":
                shots = [(cls, image(cls, rng)) for cls in names for _ in range(4)]
                c.post(f"/memories/{memory_id}/support", files=[("files", (f"s{i}.png", d, "image/png")) for i, (_, d) in enumerate(shots)],
                       data={"labels": [cls for cls, _ in shots]}).raise_for_status()
            c.post(f"/memories/{memory_id}/snapshot", json={"label": "after support"}).raise_for_status()
        truth = {}
        for step in range(30):
            for memory_id in ids:
                drift = step / 30  # later requests lean to one class and get noisier
                batch = [rng.choices(names, weights=[1.0, 1.0 + 2 * drift, 1.0])[0] for _ in range(4)]
                sources = [f"cam{step:03d}-{k}-{memory_id[:4]}" for k in range(4)]
                r = c.post(f"/memories/{memory_id}/predict", files=[("files", (f"q{k}.png", image(cls, rng), "image/png"))
                                                                     for k, cls in enumerate(batch)],
                           data={"update": "true", "source_ids": sources})
                r.raise_for_status()
                for p, cls in zip(r.json()["predictions"], batch):
                    truth[(memory_id, p["prediction_id"])] = cls
            time.sleep(0.5)
        for memory_id in ids[:2]:  # an operator labels some of the queue
            queue = c.get(f"/memories/{memory_id}/queue?limit=12").json()["queue"]
            for q in queue[:10]:
                c.post(f"/memories/{memory_id}/predictions/{q['id']}/label",
                       json={"label": truth[(memory_id, q["id"])]}).raise_for_status()
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1500", "--hide-scrollbars",
                 "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=shutil.which("chromedriver")))
    try:
        driver.get(f"{base}/console#token={TOKEN}&memory={ids[0]}")
        while not driver.find_elements("id", f"memory-{ids[0]}"):
            time.sleep(0.1)
        args.out.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out / "console-overview.png"))
        driver.execute_script("document.getElementById('queue').scrollIntoView()")
        time.sleep(0.3)
        driver.save_screenshot(str(args.out / "console-review.png"))
    finally:
        driver.quit()
        server.should_exit = True
    print(f"wrote {args.out / 'console-overview.png'} and {args.out / 'console-review.png'}")


if __name__ == "__main__":
    main()
