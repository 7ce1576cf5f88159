"""What an annotator sees: labelloop's suggestion, its model version and score, in Label Studio's labeling UI.

A real headless Chromium (Debian's ``chromium``, driven by Playwright with ``executable_path`` — no browser
download; ``make tools`` installs it) logs into the session's Label Studio and opens a task of a project that
`labelloop setup` wired to labelloop's backend (the real app, tiny model, with its swap watcher). Label Studio
asks the backend when the task opens; the prediction tab must show the backend's ``model_version`` and the score.
Then a new adapter version is promoted in the registry and announced on Redis, as the retraining job does; the
backend swaps it in; the data manager's "Retrieve predictions" action (what an annotator clicks for tasks that
already have a suggestion) asks it again, and the same task shows both suggestions, the new version first.

Screenshots go to ``test-output/screenshots/`` (kept by CI): ``annotator-before-swap.png``,
``annotator-after-swap.png``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from label_studio_sdk import LabelStudio
from werkzeug.serving import make_server

from ml_backend.app import create_app
from ml_backend.cli.setup import run_setup
from ml_backend.events import Loop
from ml_backend.registry import Registry
from ml_backend.settings import Settings
from ml_backend.studio import LocalLabelStudio
from ml_backend.swaps import attach

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-output" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# No sandbox as root; no GPU; and no background connections (this machine's network is closed).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
UI_TIMEOUT_MS = 180_000  # the first suggestion loads the model and generates on 2 CPU cores
PREDICTION_TAB = ".lsf-annotation-button:has(.lsf-annotation-button__userpic_prediction)"


@dataclass
class Backend:
    url: str
    settings: Settings
    app: Flask


@pytest.fixture
def backend(
    make_settings: Callable[..., Settings], tiny_model: Callable[..., Path], label_studio: LocalLabelStudio
) -> Iterator[Backend]:
    """labelloop's backend app with its swap watcher, serving the tiny model from a thread on a free port."""
    settings = make_settings(
        model=str(tiny_model("qwen2_vl")),
        model_name="tiny",
        max_new_tokens=12,
        ls_url=label_studio.url,
        ls_api_key=label_studio.legacy_token,
        swap_poll_interval=1.0,
    )
    app = create_app(settings)
    watcher = attach(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield Backend(url, settings.model_copy(update={"backend_url": url}), app)
    finally:
        watcher.stop()
        server.shutdown()


def lora_adapter(base: Path, out: Path) -> Path:
    """A peft LoRA adapter for the tiny Qwen2-VL (untrained: what matters here is the new version)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2VLForConditionalGeneration

    model = Qwen2VLForConditionalGeneration.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(out)
    return out


def stands_for(shown: str, version: str) -> bool:
    """Whether a name LS displays is ``version``, whole or shortened to ``<head>...<tail>``."""
    if shown == version:
        return True
    head, dots, tail = shown.partition("...")
    return bool(dots) and version.startswith(head) and version.endswith(tail)


def prediction_tabs(page: Any) -> list[dict[str, str]]:
    """The prediction tabs above the labeling area: displayed name, score text and the score's tooltip."""
    tabs = []
    for tab in page.locator(PREDICTION_TAB).all():
        score = tab.locator("span[title^='Prediction score']")
        tabs.append(
            {
                "name": tab.locator(".lsf-annotation-button__name").inner_text().strip(),
                "score_text": score.inner_text().strip(),
                "score_title": score.get_attribute("title") or "",
            }
        )
    return tabs


def open_task(page: Any, ls_url: str, project_id: int, task_id: int, version: str) -> dict[str, str]:
    """Open a task in the labeling UI and wait until a prediction tab of ``version`` shows; return it."""
    page.goto(f"{ls_url}/projects/{project_id}/data?task={task_id}")
    page.wait_for_function(
        """([selector, head, tail]) => [...document.querySelectorAll(selector)].some(tab => {
               const name = tab.querySelector('.lsf-annotation-button__name')?.textContent?.trim() ?? '';
               return name.startsWith(head) && name.endsWith(tail);
           })""",
        arg=[PREDICTION_TAB, version[:4], version[-4:]],
        timeout=UI_TIMEOUT_MS,
    )
    page.wait_for_load_state("networkidle")
    matches = [tab for tab in prediction_tabs(page) if stands_for(tab["name"], version)]
    assert len(matches) == 1, prediction_tabs(page)
    return matches[0]


def assert_shows_score(tab: dict[str, str], score: float) -> None:
    """The tab shows LS's stored score: exactly in the tooltip, as a percentage with 2 decimals in the text."""
    title = re.fullmatch(r"Prediction score = (\S+)", tab["score_title"])
    assert title is not None, tab
    assert float(title[1]) == pytest.approx(score, rel=1e-6, abs=1e-9)
    shown = re.search(r"([0-9.]+)%", tab["score_text"])
    assert shown is not None, tab
    assert shown[1] == f"{score * 100:.2f}"


def test_annotator_sees_the_suggestion_its_model_version_and_score_before_and_after_a_swap(
    backend: Backend,
    label_studio: LocalLabelStudio,
    ls_client: LabelStudio,
    make_pngs: Callable[..., list[Path]],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make tools` (Debian's chromium; never `playwright install`)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    report = run_setup(backend.settings, "caption", "annotator view", images=make_pngs(1, size=(96, 64))[0].parent)
    project = report.project_id
    (first,) = [task.id for task in ls_client.tasks.list(project=project)]
    base_version = "tiny@base"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{label_studio.url}/user/login/")
            page.fill("input[name=email]", label_studio.username)
            page.fill("input[name=password]", label_studio.password)
            page.click("button[type=submit]")
            page.wait_for_url(re.compile(rf"^{re.escape(label_studio.url)}/(?!user/login)"))

            before = open_task(page, label_studio.url, project, first, base_version)
            page.screenshot(path=str(SCREENSHOTS / "annotator-before-swap.png"))
            (stored,) = [p for p in ls_client.predictions.list(task=first) if p.model_version == base_version]
            assert_shows_score(before, stored.score)

            # a new version is promoted and announced, as the retraining job does after its evaluation gate
            registry = Registry(backend.settings.data_dir)
            run = registry.create_run(project, trigger="test", base_model=backend.settings.model)
            adapter = lora_adapter(tiny_model("qwen2_vl"), tmp_path / "adapter")
            version = registry.add_version(run.id, registry.store_adapter(adapter, registry.new_version_id(project)))
            registry.promote(version.id)
            Loop.from_settings(backend.settings).publish_activation(project, version.id)
            new_version = f"tiny@{version.id}"
            with httpx.Client(base_url=backend.url, timeout=10) as client:
                served = ""
                for _ in range(600):  # bounded wait for the backend's watcher (it also polls every second)
                    served = client.get("/versions").json()["projects"].get(str(project), "")
                    if served == new_version:
                        break
                    page.wait_for_timeout(100)
                assert served == new_version

            # the task already has a suggestion, so opening it asks for none: the data manager's "Retrieve
            # predictions" action asks the backend again for tasks without one of the current version
            ls_client.actions.create(
                id="retrieve_tasks_predictions",
                project=project,
                selected_items={"all": False, "included": [first]},
            )
            after = open_task(page, label_studio.url, project, first, new_version)
            page.screenshot(path=str(SCREENSHOTS / "annotator-after-swap.png"))
            (stored_new,) = [p for p in ls_client.predictions.list(task=first) if p.model_version == new_version]
            assert_shows_score(after, stored_new.score)
            assert [tab["name"] for tab in prediction_tabs(page)] == [new_version, base_version]  # newest first
        finally:
            browser.close()
