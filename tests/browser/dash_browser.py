#!/usr/bin/python3
"""tests/browser/dash_browser.py: the dashboard in a real browser.

Headless Chromium (Debian's chromium and chromium-driver, driven by
selenium) against a real `plumb dash --redis` and a real redis-server on
free localhost ports, while real GRPO runs (a random tiny model on the
arithmetic task, metrics.redis set) train:

  - a run that starts after the page is open appears in the run list as
    running, then as finished;
  - when Redis is killed the page says it is reconnecting, and when Redis
    is back it shows the runs again;
  - its page has a reward chart with a point for every logged step (the
    lines of its metrics.jsonl);
  - a response that holds markup (<script>, an <img> with onerror),
    logged to the run's samples stream as a coordinator logs one, shows
    in the samples table as text and runs nothing;
  - a second run overlays the first on the same axes (one line each,
    with every point of each);
  - screenshots of the run list, a run and the overlay are saved in --out.

Exits 77 (a skip for ctest) when chromium, chromedriver or selenium are
missing; `make test` installs them.

usage: /usr/bin/python3 tests/browser/dash_browser.py --plumb build/plumb --out DIR"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    print("skip: python3-selenium is not installed")
    sys.exit(77)

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
REWARD = "rollout/reward_mean"
HOSTILE = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_for(what, cond, seconds):
    end = time.time() + seconds
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def wait_port(port):
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False
    wait_for(f"a server on port {port}", up, 10)


def browser():
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=o)


# The run list is rebuilt every 2 s and charts on each new line, so the
# page is read in one script at a time: an element found by one call may be
# gone by the next.
def run_state(page, name):
    """The state the run list shows for name, or None."""
    return page.execute_script(
        "const c = document.querySelector(`#runs tr[data-run='${arguments[0]}'] td.state`);"
        "return c ? c.dataset.state : null;", name)


def chart_points(page, key):
    """The points per line of the chart of key, or None before it is drawn."""
    return page.execute_script(
        "const b = document.querySelector(`div.chart[data-key='${arguments[0]}']`);"
        "return b ? b.dataset.points : null;", key)


def logged(path, key):
    """The steps of a metrics.jsonl that carry key."""
    with open(path) as f:
        return sum(1 for line in f if key in json.loads(line))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--plumb", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if not os.path.exists(CHROMEDRIVER) or not shutil.which("chromium"):
        print("skip: chromium and chromium-driver are not installed")
        sys.exit(77)
    plumb = os.path.abspath(a.plumb)
    os.makedirs(a.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="dash-browser-")
    procs, page = [], None

    def start(argv, log):
        p = subprocess.Popen(argv, stdout=open(f"{tmp}/{log}", "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    def train(name, steps, seed):
        return start([plumb, "train", "configs/grpo-arith.yaml", "--quiet", f"run.dir={tmp}/{name}",
                      f"run.seed={seed}", f"run.steps={steps}", "run.log_every=1", "model.path=",
                      f"model.tokenizer={tmp}/arith", f"data.train={tmp}/arith/prompts.jsonl",
                      f"data.eval={tmp}/arith/eval.jsonl", f"eval.every={steps // 4}", "eval.n=8",
                      "train.batch_size=8", "algo.group_size=8", f"metrics.redis={url}"],
                     f"{name}.log")

    try:
        rport, dport = free_port(), free_port()
        redis = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                 "--dir", tmp, "--appendonly", "yes", "--appendfsync", "always"]
        rs = start(redis, "redis.log")
        wait_port(rport)
        url = f"redis://127.0.0.1:{rport}"
        subprocess.run([plumb, "data", "arith", "--out", f"{tmp}/arith"], check=True,
                       stdout=subprocess.DEVNULL)
        start([plumb, "dash", "--redis", url, "--port", str(dport)], "dash.log")
        wait_port(dport)
        page = browser()
        page.get(f"http://127.0.0.1:{dport}/")
        wait_for("the run list", lambda: page.find_elements(By.ID, "runs"), 10)

        # a run that starts now shows as running, then as finished
        t1 = train("run1", 400, 1)
        wait_for("run1 running in the list", lambda: run_state(page, "run1") == "running", 60)
        page.save_screenshot(f"{a.out}/dash-runs.png")
        assert t1.wait(timeout=300) == 0, "run1 failed: see its log"
        wait_for("run1 finished in the list", lambda: run_state(page, "run1") == "finished", 10)

        # Redis dies: the page says it is reconnecting, and recovers when
        # Redis is back (its append-only file keeps the registry)
        rs.kill()
        rs.wait()
        conn = lambda: page.execute_script("return document.getElementById('conn').textContent")
        wait_for("the page to say it is reconnecting", lambda: "reconnecting" in conn(), 15)
        page.save_screenshot(f"{a.out}/dash-reconnecting.png")
        start(redis, "redis2.log")
        wait_port(rport)
        wait_for("the page to recover", lambda: conn() == "" and run_state(page, "run1"), 15)
        assert run_state(page, "run1") == "finished"
        # the outage's 503s are all the console may hold so far
        for e in page.get_log("browser"):
            assert "503" in e["message"], e

        # markup in a response, logged where the coordinator logs samples
        last_eval = 400
        sample = json.dumps({"step": last_eval, "prompt": "<b>1+1=</b>", "response": HOSTILE,
                             "reward": 0, "answer": "2"})
        subprocess.run(["redis-cli", "-p", str(rport), "XADD", "plumb:metrics:run1:samples", "*",
                        "step", str(last_eval), "json", sample], check=True,
                       stdout=subprocess.DEVNULL)

        # its page: a reward point for every logged step
        n1 = logged(f"{tmp}/run1/metrics.jsonl", REWARD)
        assert n1 == 400, f"run1 logged {n1} reward steps"
        page.get(f"http://127.0.0.1:{dport}/#/run/run1")
        wait_for("run1's reward chart", lambda: chart_points(page, REWARD), 20)
        assert chart_points(page, REWARD) == str(n1), chart_points(page, REWARD)
        state = page.find_element(By.ID, "state").get_attribute("data-state")
        assert state == "finished", state

        # the samples of that step, as text
        page.execute_script("const p = document.getElementById('sample-step');"
                            f"p.value = '{last_eval}'; p.dispatchEvent(new Event('change'));")
        texts = [e.text for e in page.find_elements(By.CSS_SELECTOR, "#samples pre")]
        assert HOSTILE in texts, texts
        assert "<b>1+1=</b>" in texts, texts
        assert not page.find_elements(By.CSS_SELECTOR, "#samples img, #samples script, #samples b")
        assert page.execute_script("return window.__xss === undefined"), "the response ran"
        page.save_screenshot(f"{a.out}/dash-run.png")

        # a second run overlays the first
        t2 = train("run2", 200, 2)
        assert t2.wait(timeout=300) == 0, "run2 failed: see its log"
        n2 = logged(f"{tmp}/run2/metrics.jsonl", REWARD)
        page.get(f"http://127.0.0.1:{dport}/")
        wait_for("run2 finished in the list", lambda: run_state(page, "run2") == "finished", 20)
        page.execute_script(
            "for (const n of ['run1', 'run2'])"
            "  document.querySelector(`#runs tr[data-run='${n}'] input`).checked = true;"
            "document.getElementById('overlay').click();")
        wait_for("the overlay's reward chart", lambda: chart_points(page, REWARD), 20)
        assert chart_points(page, REWARD) == f"{n1},{n2}", chart_points(page, REWARD)
        page.save_screenshot(f"{a.out}/dash-compare.png")
        errors = [e for e in page.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        print(f"ok: run1 ({n1} points) running then finished, Redis lost and back, samples as text, "
              f"overlay {n1},{n2}; screenshots in {a.out}")
    except Exception:
        if page:
            page.save_screenshot(f"{a.out}/dash-failed.png")
        for log in sorted(os.listdir(tmp)):
            if log.endswith(".log"):
                with open(f"{tmp}/{log}") as f:
                    tail = f.read()[-2000:]
                print(f"--- {log}\n{tail}", file=sys.stderr)
        raise
    finally:
        if page:
            page.quit()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
