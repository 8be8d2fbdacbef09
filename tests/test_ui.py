"""`tunelab ui` in a real browser: Debian's chromium driven by Selenium (`make browser`
installs both; Selenium gets their paths, so it never downloads either), against a
`tunelab ui` process serving a git copy of this repo on the tiny model.

One module-scoped lab: experiment ui-a is queued as the page would queue it (`dvc exp run
--queue`, `dvc queue start`) as the module starts, and the pages that need no finished
run are tested while it runs; ui-b is launched from the form while ui-a still runs, so it
waits in the queue (the busy rule) and then runs; the two are compared, chatted with and
promoted. The tests run in file order and build on each other.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY_PIPELINE, copy_repo, free_port, run_tool

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# The tiny pipeline, cut to what the pages need: no held-out or general-ability sets, one
# GGUF type and no GGUF LoRA (each experiment then takes about a minute on 2 cores).
LAB_PARAMS = {
    "prepare": {"val_ratio": 0.0},
    "train": {"max_steps": 2, "batch_size": 2, "eval_steps": 0, "logging_steps": 1,
              "save_steps": 0, "warmup_ratio": 0.0, "lr_scheduler": "constant"},
    "evaluate": {"max_examples": 2, "max_new_tokens": 4, "batch_size": 2, "heldout": "",
                 "general": ""},
    "export": {**TINY_PIPELINE["export"], "lora": False},
}
RAW_EXAMPLES = 60  # of the shipped tickets: the stages that read them all take less
RUN_MINUTES = 6  # the most two queued tiny experiments may take, one after the other


def dvc_env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")


def start_queue(repo: Path) -> None:
    # Output to /dev/null, not a pipe: the process that spawns the worker keeps it open.
    subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", "1"], cwd=repo,
                   env=dvc_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_base_dir):
    """(repo, base url, browser): ui-a queued and running, `tunelab ui` serving the repo."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are not installed: `make test` installs "
                        "them (make browser)")
        pytest.skip("chromium / chromium-driver not installed (make browser)")
    root = tmp_path_factory.mktemp("ui")
    repo = copy_repo(root / "repo", LAB_PARAMS, tiny_base_dir)
    raw = repo / "data/raw/tickets.jsonl"  # 60 examples: 52 to train on, 8 to test on
    raw.write_text("".join(raw.read_text().splitlines(keepends=True)[:RAW_EXAMPLES]))
    run_tool(["git", "commit", "-qam", f"{RAW_EXAMPLES} examples"], repo)
    run_tool(["dvc", "exp", "run", "--queue", "-n", "ui-a", "-S", "train.learning_rate=0.001"],
             repo)
    start_queue(repo)

    port = free_port()
    log = open(root / "ui.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tunelab.cli.app", "ui", "--port",
                               str(port)], cwd=repo, env=dvc_env(), stdout=log,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never fetch a browser or driver
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        deadline = time.monotonic() + 90
        while fetch(url + "/runs")[0] != 200:
            assert server.poll() is None and time.monotonic() < deadline, \
                (root / "ui.log").read_text()[-3000:]
            time.sleep(0.5)
        yield repo, url, browser
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)
        log.close()
        subprocess.run([sys.executable, "-m", "dvc", "queue", "stop", "--kill"], cwd=repo,
                       env=dvc_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def fetch(url: str, form: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
    """(status, body) of a GET, or of a form POST."""
    data = urllib.parse.urlencode(form, doseq=True).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def visit(lab, path: str):
    _, url, browser = lab
    browser.get(url + path)
    return browser


def find(browser, css: str):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, css)


def find_all(browser, css: str):
    from selenium.webdriver.common.by import By

    return browser.find_elements(By.CSS_SELECTOR, css)


def wait_for(browser, condition, seconds: float, message: str):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The progress page reloads itself when the state changes: elements vanish meanwhile.
    return WebDriverWait(browser, seconds, poll_frequency=1, ignored_exceptions=(
        NoSuchElementException, StaleElementReferenceException)).until(condition, message)


def choose(select, text: str) -> None:
    from selenium.webdriver.support.ui import Select

    Select(select).select_by_visible_text(text)


def run_row(browser, name: str) -> dict[str, str]:
    """The Runs table's row of ``name`` as {column header: cell text}."""
    headers = [cell.text.rstrip(" ↕") for cell in find_all(browser, "#runs-table thead th")]
    row = find(browser, f'#runs-table tr[data-run="{name}"]')
    return dict(zip(headers, [cell.text for cell in row.find_elements("css selector", "td")]))


def shown_experiments(repo: Path) -> dict[str, dict]:
    shown = json.loads(run_tool(["dvc", "exp", "show", "--json"], repo).stdout)
    return {exp["name"]: exp["revs"][0]["data"] for rev in shown
            for exp in (rev.get("experiments") or [])}


# --- while ui-a runs: the pages that need no finished run -------------------------------

def test_runs_page_lists_the_workspace_the_commit_and_the_running_experiment(lab):
    browser = visit(lab, "/runs")
    assert find(browser, "h1").text == "Runs"
    names = [row.get_attribute("data-run") for row in find_all(browser, "#runs-table tbody tr")]
    assert names[0] == "workspace" and "ui-a" in names
    assert run_row(browser, "ui-a")["State"] in ("queued", "running")
    head = run_tool(["git", "rev-parse", "--short=7", "HEAD"], lab[0]).stdout.strip()
    assert run_row(browser, head)["Kind"] == "commit"


def test_unknown_run_model_and_page_are_404_pages(lab):
    _, url, _ = lab
    for path, words in (("/runs/no-such-run", "no run named 'no-such-run'"),
                        ("/compare?run=no-such-run&run=ui-a", "no run named 'no-such-run'"),
                        ("/playground?run=no-such-run", "no run named 'no-such-run'"),
                        ("/launch/no-such-run", "no run named 'no-such-run'"),
                        ("/no-such-page", "no page /no-such-page")):
        status, body = fetch(url + path)
        assert status == 404 and words in body.replace("&#39;", "'"), path
        assert "Traceback" not in body
    browser = visit(lab, "/runs/no-such-run")
    assert find(browser, "h1").text == "Not found"
    assert "no run named 'no-such-run'" in find(browser, "#error-message").text


def test_data_page_without_a_base_model_says_how_to_get_one(lab):
    status, body = fetch(lab[1] + "/data")
    assert status == 400 and "models/base: no tokenizer to count tokens with: `dvc repro " \
        "base`" in body
    assert "Traceback" not in body


def test_launch_form_shows_the_schema_message_for_an_out_of_range_value(lab):
    browser = visit(lab, "/launch")
    assert "One run at a time" in find(browser, "#busy-rule").text
    box = find(browser, "#train\\.learning_rate")
    box.clear()
    box.send_keys("-1")
    find(browser, "#launch-button").click()
    wait_for(browser, lambda b: find_all(b, "#error-message"), 60, "no refusal shown")
    assert find(browser, "#error-message").text == "train.learning_rate: must be > 0, got -1.0"
    assert find(browser, ".field.error label").text == "train.learning_rate"
    assert find(browser, "#train\\.learning_rate").get_attribute("value") == "-1"  # kept
    status, body = fetch(lab[1] + "/launch", {"train.learning_rate": "-1"})
    assert status == 400 and "Traceback" not in body
    status, body = fetch(lab[1] + "/launch", {"train.save_steps": "3",  # across keys
                                              "train.logging_steps": "2"})
    assert status == 400 and "train.save_steps: must be a multiple of train.logging_steps" \
        in body
    assert set(shown_experiments(lab[0])) == {"ui-a"}  # nothing was queued


# --- ui-b: launched from the form while ui-a runs, so it waits in the queue -------------

def launch(lab, name: str, learning_rate: str):
    """Fill the launch form and send it; the browser on the run's page."""
    browser = visit(lab, "/launch")
    find(browser, 'input[name="_name"]').send_keys(name)
    rate = find(browser, "#train\\.learning_rate")
    rate.clear()
    rate.send_keys(learning_rate)
    find(browser, "#launch-button").click()
    wait_for(browser, lambda b: b.current_url.endswith(f"/launch/{name}"), 60, "no run page")
    return browser


def test_a_launch_while_a_run_is_going_is_queued(lab):
    browser = launch(lab, "ui-b", "0.01")
    assert find(browser, "h1").text == "Run ui-b"
    assert find(browser, "#state").text == "queued"  # ui-a still runs: the busy rule
    assert "behind ui-a" in find(browser, "main p").text


def test_a_queued_run_can_be_taken_off_the_queue(lab):
    browser = launch(lab, "ui-c", "0.02")
    assert find(browser, "#state").text == "queued"
    find(browser, "#stop-button").click()
    browser.switch_to.alert.accept()  # "Stop ui-c?"
    wait_for(browser, lambda b: b.current_url.endswith("/runs"), 60, "not taken off")
    status = run_tool(["dvc", "queue", "status"], lab[0]).stdout
    assert "ui-c" not in status and "ui-b" in status
    assert fetch(lab[1] + "/launch/ui-c")[0] == 404


def test_the_queued_run_runs_to_the_end_and_the_page_follows_it(lab):
    repo = lab[0]
    browser = visit(lab, "/launch/ui-b")
    seen = set()

    def finished(b):
        state = find(b, "#state").text
        if state == "running":
            seen.add((find(b, "#stage").text, find(b, "#step").text))
        return state in ("done", "failed")

    wait_for(browser, finished, RUN_MINUTES * 60, "ui-b did not finish")
    assert find(browser, "#state").text == "done", find(browser, "main").text
    assert any(stage not in ("", "—") for stage, _ in seen), seen  # it named the stage
    experiments = shown_experiments(repo)
    assert experiments["ui-b"]["params"]["params.yaml"]["data"]["train"]["learning_rate"] == 0.01
    assert experiments["ui-a"]["params"]["params.yaml"]["data"]["train"]["learning_rate"] == 0.001
    assert "tuned" in experiments["ui-b"]["metrics"]["metrics/eval.json"]["data"]


def test_runs_page_shows_params_metrics_sorts_and_filters(lab):
    experiments = shown_experiments(lab[0])
    browser = visit(lab, "/runs")
    for name, rate in (("ui-a", "0.001"), ("ui-b", "0.01")):
        row = run_row(browser, name)
        loss = experiments[name]["metrics"]["metrics/eval.json"]["data"]["tuned"]["loss"]
        assert (row["State"], row["train.learning_rate"]) == ("done", rate)
        assert row["tuned.loss"] == f"{loss:.4g}"
    header = next(h for h in find_all(browser, "#runs-table thead th")
                  if h.text.startswith("train.learning_rate"))
    header.click()
    header.click()  # descending: ui-b's 0.01 first
    first = find(browser, "#runs-table tbody tr").get_attribute("data-run")
    assert first == "ui-b"
    find(browser, "#run-filter").send_keys("ui-b")
    visible = [row.get_attribute("data-run") for row in find_all(browser, "#runs-table tbody tr")
               if row.is_displayed()]
    assert visible == ["ui-b"]


def test_compare_two_experiments(lab):
    browser = visit(lab, "/runs")
    for name in ("ui-a", "ui-b"):
        find(browser, f'#runs-table tr[data-run="{name}"] input[type=checkbox]').click()
    find(browser, "#compare-selected").click()
    wait_for(browser, lambda b: "/compare?" in b.current_url, 60, "no compare page")
    # In the table's order, newest first: ui-b is A, the run the others are measured against.
    assert find(browser, "h1").text == "Compare ui-b · ui-a"
    experiments = shown_experiments(lab[0])
    losses = [experiments[name]["metrics"]["metrics/eval.json"]["data"]["tuned"]["loss"]
              for name in ("ui-b", "ui-a")]
    row = next(r for r in find_all(browser, "#metric-deltas tr")
               if r.text.startswith("tuned.loss"))
    assert row.text.split()[-3:] == [f"{losses[0]:.4g}", f"{losses[1]:.4g}",
                                     f"{losses[1] - losses[0]:+.4g}"]
    paired = [r.text for r in find_all(browser, "#paired tr")[1:]]
    assert [line.split()[:2] for line in paired] == [["ui-a", "task_accuracy"],
                                                     ["ui-a", "json_valid"],
                                                     ["ui-a", "exact_match"]]
    assert all(re.search(r"\[[-+]\d\.\d{3}, [-+]\d\.\d{3}\]", line) for line in paired)
    assert "2 test examples answered by every run" in find(browser, "#paired").find_element(
        "xpath", "preceding-sibling::p[1]").text
    curves = find(browser, "#curves")
    assert curves.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", curves) > 0
    assert "examples were answered differently" in find(browser, "main").text


def test_playground_chats_with_the_base_the_tuned_and_the_gguf_model(lab):
    browser = visit(lab, "/playground?run=ui-b")
    boxes = {box.get_attribute("value"): box for box in find_all(browser, 'input[name="model"]')}
    assert list(boxes) == ["base", "tuned", "gguf:q8_0"]
    assert all(box.is_selected() for box in boxes.values())
    find(browser, "#message").send_keys("My order RMA-1 never arrived.")
    find(browser, "#send-button").click()
    wait_for(browser, lambda b: find_all(b, ".answer"), 180, "no answers")  # models load first
    answers = {section.get_attribute("data-model"): section for section in find_all(browser,
                                                                                   ".answer")}
    assert list(answers) == ["base", "tuned", "gguf:q8_0"]
    for model, section in answers.items():
        assert not section.find_elements("css selector", ".message.error"), section.text
        text = section.find_element("css selector", ".answer-text").text
        assert text.strip(), f"{model} answered nothing"
        assert re.search(r"\d+ tokens, (length|stop)", section.text)
    assert "My order RMA-1 never arrived." in find(browser, "#message").text
    status, body = fetch(lab[1] + "/playground", {"run": "ui-b", "message": "hi",
                                                  "model": "no-such-model"})
    assert status == 404 and "no model &#39;no-such-model&#39; in run ui-b" in body


def test_registry_promotes_and_assigns_only_after_confirming(lab):
    repo = lab[0]
    browser = visit(lab, "/registry")
    assert "No version registered yet." in find(browser, "#artifact-ticket-triage-adapter").text
    choose(find(browser, 'select[name="run"]'), "ui-b")
    find(browser, 'form[action="/registry/promote"] button').click()
    wait_for(browser, lambda b: find(b, "h1").text == "Confirm", 60, "no confirmation page")
    assert "Promote experiment ui-b" in find(browser, "#confirm-text").text
    assert run_tool(["git", "tag"], repo).stdout == ""  # nothing done before confirming
    find(browser, "#confirm-button").click()
    wait_for(browser, lambda b: find_all(b, "#done-message"), 120, "not promoted")
    assert "ui-b promoted" in find(browser, "#done-message").text
    version = find(browser, "#artifact-ticket-triage-adapter tr.version")
    assert version.get_attribute("data-version") == "v0.0.1" and "staging" in version.text

    choose(version.find_element("css selector", 'select[name="stage"]'), "prod")
    version.find_element("css selector", "button").click()
    wait_for(browser, lambda b: find(b, "h1").text == "Confirm", 60, "no confirmation page")
    assert "Assign ticket-triage-adapter v0.0.1" in find(browser, "#confirm-text").text
    find(browser, "#confirm-button").click()
    wait_for(browser, lambda b: find_all(b, "#done-message"), 60, "not assigned")
    assert find(browser, "#done-message").text == "ticket-triage-adapter v0.0.1 is in prod"
    tags = run_tool(["git", "tag"], repo).stdout.split()
    assert "ticket-triage-adapter@v0.0.1" in tags
    assert any(tag.startswith("ticket-triage-adapter#prod#") for tag in tags)
    status, body = fetch(lab[1] + "/registry/assign", {"artifact": "ticket-triage-adapter",
                                                       "version": "v9.9.9", "stage": "prod"})
    assert status == 404 and "has no registered version" in body


def test_data_page_shows_the_histogram_against_max_length_and_the_loss_mask(lab):
    # The promotion checked ui-b's outputs out into the workspace: models/base is there.
    from tunelab.data import prepare

    browser = visit(lab, "/data")
    assert find(browser, "h1").text == "Data"
    examples = len(prepare.load_files(prepare.raw_files(lab[0] / "data/raw")).examples)
    assert f"{examples} examples in data/raw/tickets.jsonl" in find(browser, "main p").text
    assert find(browser, "#max-length").text.startswith("256;")
    assert find(browser, "#histogram").get_attribute("src").startswith("data:image/png;base64,")
    assert find(browser, "#exact-duplicates").text.startswith("0")
    previews = find_all(browser, ".preview")
    assert len(previews) == 3
    marked = previews[0].find_elements("css selector", ".loss")
    assert marked and marked[-1].text.startswith('{"category"')  # the answer carries the loss


# --- access: the API key rules of `tunelab serve` --------------------------------------

def test_an_open_host_needs_a_key_and_a_browser_signs_in_with_it(lab, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from tunelab.cli import app as cli
    from tunelab.serve import server
    from tunelab.ui import app

    monkeypatch.delenv(server.API_KEY_ENV, raising=False)
    assert cli.main(["ui", "--host", "0.0.0.0"]) == 2
    assert "--host 0.0.0.0: not this machine only, and no API key is set" in \
        capsys.readouterr().err

    client = TestClient(app.create_app(lab[0], api_key="sesame", host="0.0.0.0"),
                        base_url="http://lab.example:8765")
    assert client.get("/runs", follow_redirects=False).headers["location"] == \
        "/login?next=/runs"
    assert client.post("/login", data={"key": "wrong", "next": "/runs"}).status_code == 401
    # Signed in, a request gets past the key check: here to a page that does not exist.
    signed_in = client.post("/login", data={"key": "sesame", "next": "/no-such-page"})
    assert signed_in.status_code == 404 and "no page /no-such-page" in signed_in.text
    assert "sesame" not in client.cookies.get(app.SESSION_COOKIE)  # an HMAC, not the key
    bearer = TestClient(client.app, base_url="http://lab.example:8765")
    assert bearer.get("/no-such-page", headers={"Authorization": "Bearer sesame"}) \
        .status_code == 404
    assert bearer.get("/no-such-page", headers={"Authorization": "Bearer wrong"},
                      follow_redirects=False).status_code == 303
    assert bearer.post("/launch", data={}).status_code == 401


def test_requests_from_other_sites_are_refused(lab):
    _, url, _ = lab
    status, body = fetch(url + "/launch", {"train.learning_rate": "0.5"},
                         {"Origin": "http://evil.example"})
    assert status == 403 and "another site" in body
    status, body = fetch(url + "/runs", headers={"Host": "evil.example"})  # DNS rebinding
    assert status == 403 and "this machine only" in body


def test_form_help_is_params_yaml_comment_and_the_schema_range():
    from tunelab.ui import launch

    values, problem = launch.current_values(REPO)
    assert problem == ""
    fields = {f.key: f for section in launch.form_sections(REPO, values) for f in section.fields}
    rate = fields["train.learning_rate"]
    assert (rate.kind, rate.limits, rate.type_name) == ("float", "> 0", "float")
    assert rate.help.startswith("peak LR for lora/qlora")
    assert fields["train.method"].options == ("lora", "qlora", "full")
    assert fields["train.max_steps"].limits == "-1 (train for epochs) or > 0"
    assert "check.tuned.loss" not in fields  # read by no stage


def test_a_run_is_listed_with_the_sweep_whose_record_names_it(tmp_path):
    from tunelab.ui import runs

    records = tmp_path / "reports/sweeps"
    records.mkdir(parents=True)
    (records / "lr-1.json").write_text(json.dumps(
        {"id": "lr-1", "trials": [{"name": "lr-1-01"}, {"name": "lr-1-02"}]}))
    (records / "broken.json").write_text("{")  # a record that cannot be read names none
    shown = [{"rev": "workspace", "data": {"params": {}, "metrics": {}}},
             {"rev": "a" * 40, "name": "main", "data": {
                 "timestamp": "2026-01-01T00:00:00",
                 "params": {"params.yaml": {"data": {"train": {"learning_rate": 0.001}}}},
                 "metrics": {"metrics/eval.json": {"data": {"tuned": {"loss": 0.5}}},
                             "metrics/train/summary.json": {"data": {"eval_loss": 0.4}}}},
              "experiments": [
                  {"name": "lr-1-01", "executor": {"state": "success", "local": {}},
                   "revs": [{"rev": "b" * 40, "data": {
                       "metrics": {"metrics/eval.json": {"data": {"tuned": {"loss": 0.3}}}}}}]},
                  {"name": "other", "executor": {"state": "running",
                                                 "local": {"root": "/tmp/x", "log": "x.out"}},
                   "revs": [{"rev": "c" * 40, "data": {
                       "metrics": {"metrics/eval.json": {"data": {"tuned": {"loss": 9.9}}}}}}]}]}]
    table = list(runs.table_rows(shown, sweep_record_of(tmp_path)))
    assert [(r.name, r.kind, r.state, r.sweep) for r in table] == [
        ("workspace", "workspace", "done", None), ("aaaaaaa", "commit", "done", None),
        ("lr-1-01", "experiment", "done", "lr-1"), ("other", "experiment", "running", None)]
    commit, trial, running = table[1:]
    assert commit.label == "main" and commit.params == {"train.learning_rate": 0.001}
    assert commit.metrics == {"tuned.loss": 0.5, "train.eval_loss": 0.4}  # as check names them
    assert trial.metrics == {"tuned.loss": 0.3} and trial.baseline == "a" * 40
    assert running.metrics == {} and running.workdir == "/tmp/x"  # no results before the end


def sweep_record_of(root: Path) -> dict:
    from tunelab.experiments import sweep_record

    return sweep_record.trial_sweeps(root)
