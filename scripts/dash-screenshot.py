#!/usr/bin/python3
"""scripts/dash-screenshot.py: a picture of a run's dashboard page.

Serves RUNS (a folder of run folders) with `plumb dash --runs` on a free
localhost port, opens #/run/NAME in headless Chromium (Debian's chromium,
chromium-driver and python3-selenium), picks the samples of the last eval,
and saves the page's top as PNG. The README's picture is made so, from
`make demo`'s runs:

    /usr/bin/python3 scripts/dash-screenshot.py runs grpo-arith docs/dash.png
"""
import argparse
import os
import socket
import subprocess
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("name")
    ap.add_argument("png")
    ap.add_argument("--plumb", default="build/plumb")
    ap.add_argument("--size", default="1400,1100")
    a = ap.parse_args()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    dash = subprocess.Popen([os.path.abspath(a.plumb), "dash", "--runs", a.runs, "--port", str(port)],
                            stderr=subprocess.DEVNULL)
    page = None
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        o = webdriver.ChromeOptions()
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--window-size={a.size}"):
            o.add_argument(arg)
        page = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
        page.get(f"http://127.0.0.1:{port}/#/run/{a.name}")
        for _ in range(100):
            if page.find_elements(By.CSS_SELECTOR, "div.chart"):
                break
            time.sleep(0.1)
        time.sleep(0.5)
        page.save_screenshot(a.png)
    finally:
        if page:
            page.quit()
        dash.terminate()
        dash.wait()


if __name__ == "__main__":
    main()
