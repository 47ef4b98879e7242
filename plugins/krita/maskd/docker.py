"""The "Background Removal" docker: the button, the choices, engine status, progress, Cancel."""

from __future__ import annotations

import html

from krita import DockWidget
from PyQt5.QtCore import Qt, QThread, QTimer, pyqtSignal
from PyQt5.QtGui import QColor, QIcon, QPixmap
from PyQt5.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from . import api
from . import maskd_client as mc
from . import settings as cfg
from .runner import JobError, active_job, load_config

DOCKER_ID = "maskd_background_removal"
TITLE = "Background Removal"
STATUS_INTERVAL_MS = 15000
MIN_HEIGHT = 120  # the docker may shrink to this; the rest scrolls
L = mc.LABELS
# the status line's two lines: the short form of why the engine cannot be started
STATUS_TEXTS = {
    mc.MESSAGES["not_running"]: "Engine not running. Start it with “maskd serve”.",
    mc.MESSAGES[
        "start_missing"
    ]: "Engine not running, and its program is missing: run “maskd install-plugins”.",
}


def engine_model(hello: dict, status: dict) -> str:
    """The served model's name from the daemon's hello/status replies ("" when they name none)."""
    info = dict(hello or {})
    info.update(status or {})
    model = info.get("model")
    if isinstance(model, dict):
        model = model.get("preset") or model.get("name") or model.get("source")
    return str(model or "")


def describe_engine(hello: dict, status: dict) -> str:
    """One status line from the daemon's hello/status replies (fields may be missing)."""
    info = dict(hello or {})
    info.update(status or {})
    model = engine_model(hello, status)
    device = info.get("device")
    if isinstance(device, dict):
        device = device.get("name") or device.get("type")
    state = info.get("model_state")
    parts = ["Engine connected"]
    if device:
        parts.append(str(device))
    if model:
        parts.append(str(model) + ("" if state in (None, "ready") else f" ({state})"))
    elif state:
        parts.append(f"model {state}")
    return " · ".join(parts)


class _StatusProbe(QThread):
    """Asks the daemon (if it runs) for its state and installed models, without ever starting it
    or blocking the GUI. Not running: says whether the plugin can start it (the start command
    exists), or what to do."""

    answered = pyqtSignal(bool, str, str)
    models = pyqtSignal(list, str)  # installed preset names, the served one

    def run(self):
        from . import maskd_client as mc

        try:
            config = load_config()
            with mc.connect(config.get("connection_file") or None, timeout=3.0) as client:
                status = client.status()
                text = describe_engine(client.hello_info, status)
                model = engine_model(client.hello_info, status)
                listing = client.models()
            names = [m.get("name") for m in listing.get("installed") or [] if isinstance(m, dict)]
            self.models.emit([n for n in names if isinstance(n, str) and n], str(listing.get("served") or ""))
            self.answered.emit(True, text, model)
        except JobError as exc:
            self.answered.emit(False, exc.message, "")
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            if getattr(exc, "code", "") == "unavailable":
                try:
                    problem = mc.start_command_problem(load_config())
                except JobError as err:
                    problem = err.message
                message = (
                    STATUS_TEXTS.get(problem, problem)
                    if problem
                    else "Engine not running; it starts on first use."
                )
            self.answered.emit(False, message, "")


def _lines(label: QLabel, n: int) -> int:
    return label.fontMetrics().lineSpacing() * n + 4


class BackgroundRemovalDocker(DockWidget):
    """The docker's widgets sit in a scroll area (it never forces its neighbours to shrink), and
    the status and result lines keep their height whatever they say (nothing jumps on a run)."""

    def __init__(self):
        super().__init__()
        self.setWindowTitle(TITLE)
        self._job = None
        self._probe = None
        self._values = cfg.load()
        self._served = ""
        layout = self._scroll_body()
        self._add_status_line(layout)
        self._add_choices(layout)
        self._add_finishing(layout)
        self._add_buttons(layout)
        self._add_progress(layout)
        layout.addStretch(1)
        self._connect()
        self._show_relevant()
        api.add_job_listener(self._watch)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_status)
        self._timer.start(STATUS_INTERVAL_MS)
        QTimer.singleShot(0, self.refresh_status)

    # ----------------------------------------------------------------- building the docker
    def _scroll_body(self) -> QVBoxLayout:
        """The scroll area that holds everything; returns the layout the rows go into."""
        body = QWidget()
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidget(body)
        scroll.setMinimumHeight(MIN_HEIGHT)
        self.setWidget(scroll)
        self.scroll = scroll
        return QVBoxLayout(body)

    def _add_status_line(self, layout):
        """The engine's state, two lines high whatever it says."""
        self.status_label = QLabel("Checking the engine…")
        self.status_label.setWordWrap(True)
        self.status_label.setFixedHeight(_lines(self.status_label, 2))
        self.status_label.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        layout.addWidget(self.status_label)

    def _add_choices(self, layout):
        """Output, existing mask, model and quality in a form; the edge options as checkboxes."""
        form = QFormLayout()
        self.output_box = self._combo(cfg.OUTPUTS, self._values["output"])
        form.addRow(L["output"], self.output_box)
        self.existing_box = self._combo(cfg.EXISTING_MASK, self._values["existing_mask"])
        self.existing_box.setToolTip("What a new transparency mask does with a mask the layer already has")
        form.addRow(L["existing_mask"], self.existing_box)
        self.model_box = QComboBox()
        self._fill_models([], "")
        form.addRow(L["model"], self.model_box)
        self.quality_box = self._combo(cfg.QUALITIES, self._values["quality"])
        form.addRow(L["quality"], self.quality_box)
        layout.addLayout(form)
        self.refine_box = QCheckBox(L["refine"])
        self.refine_box.setChecked(self._values["refine"])
        layout.addWidget(self.refine_box)
        self.decontaminate_box = QCheckBox(L["decontaminate"])
        self.decontaminate_box.setToolTip("For the cut-out outputs: a mask stores transparency only")
        self.decontaminate_box.setChecked(self._values["decontaminate"])
        layout.addWidget(self.decontaminate_box)

    def _add_finishing(self, layout):
        """Product-photo finishing: separate, editable layers (nothing is flattened)."""
        shadow_row = QHBoxLayout()
        self.shadow_box = QCheckBox(L["shadow"])
        self.shadow_box.setToolTip(
            "A paint layer in the shadow colour under the layer, with the generated "
            "shadow as its transparency mask"
        )
        self.shadow_box.setChecked(self._values["shadow"])
        shadow_row.addWidget(self.shadow_box)
        self.shadow_style_box = self._combo(cfg.SHADOW_STYLES, self._values["shadow_style"])
        self.shadow_style_box.setEnabled(self._values["shadow"])
        shadow_row.addWidget(self.shadow_style_box)
        layout.addLayout(shadow_row)
        background_row = QHBoxLayout()
        self.background_box = QCheckBox(L["background"])
        self.background_box.setToolTip("A paint layer in this colour at the bottom of the layer's group")
        self.background_box.setChecked(self._values["background"])
        background_row.addWidget(self.background_box)
        self.background_color = self._values["background_color"]
        self.background_button = QPushButton()
        self.background_button.setToolTip(L["background_color"])
        self.background_button.clicked.connect(self._pick_background)
        self.background_button.setEnabled(self._values["background"])
        self._show_background()
        background_row.addWidget(self.background_button)
        layout.addLayout(background_row)

    def _add_buttons(self, layout):
        buttons = QHBoxLayout()
        self.run_button = QPushButton(L["run"])
        self.run_button.clicked.connect(self.run)
        buttons.addWidget(self.run_button)
        self.cancel_button = QPushButton(L["cancel"])
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

    def _add_progress(self, layout):
        """The progress bar and the result line (four lines high: room for a two-sentence error)."""
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        layout.addWidget(self.progress)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        self.stage_label.setAlignment(Qt.AlignLeft | Qt.AlignTop)
        self.stage_label.setFixedHeight(_lines(self.stage_label, 4))
        layout.addWidget(self.stage_label)

    def _connect(self):
        """Every choice is saved when it changes; options follow what they depend on."""
        for box in (
            self.output_box,
            self.existing_box,
            self.quality_box,
            self.model_box,
            self.shadow_style_box,
        ):
            box.currentIndexChanged.connect(self._save)
        for box in (self.refine_box, self.decontaminate_box, self.shadow_box, self.background_box):
            box.toggled.connect(self._save)
        self.output_box.currentIndexChanged.connect(self._show_relevant)
        self.shadow_box.toggled.connect(self.shadow_style_box.setEnabled)
        self.background_box.toggled.connect(self.background_button.setEnabled)
        self.background_box.toggled.connect(self._show_background)

    def _show_relevant(self, *_):
        """Options that do nothing for the chosen output are greyed out."""
        output = self.output_box.currentData()
        self.existing_box.setEnabled(output == "transparency-mask")
        self.decontaminate_box.setEnabled(output in ("new-layer", "apply"))

    def _fill_models(self, installed: list, served: str):
        """The engine's installed models (the served one first); the saved choice when it is not
        installed stays visible, marked, and runs with the served model."""
        wanted = self.model_box.currentData() if self.model_box.count() else self._values["model"]
        self.model_box.blockSignals(True)
        self.model_box.clear()
        self.model_box.addItem(L["model.default"] + (f" ({served})" if served else ""), "")
        for name in installed:
            self.model_box.addItem(name + (" (loaded)" if name == served else ""), name)
        if wanted and self.model_box.findData(wanted) < 0:
            self.model_box.addItem(f"{wanted} (not installed)" if installed else wanted, wanted)
        self.model_box.setCurrentIndex(max(0, self.model_box.findData(wanted or "")))
        self.model_box.blockSignals(False)

    @staticmethod
    def _combo(choices: dict, current: str) -> QComboBox:
        box = QComboBox()
        for key, label in choices.items():
            box.addItem(label, key)
        if current and box.findData(current) < 0:  # e.g. a preset learnt from the daemon earlier
            box.addItem(current, current)
        box.setCurrentIndex(max(0, box.findData(current)))
        return box

    # ----------------------------------------------------------------- settings
    def values(self) -> dict:
        return {
            "output": self.output_box.currentData(),
            "quality": self.quality_box.currentData(),
            "model": self.model_box.currentData() or "",
            "existing_mask": self.existing_box.currentData() or "intersect",
            "refine": self.refine_box.isChecked(),
            "decontaminate": self.decontaminate_box.isChecked(),
            "shadow": self.shadow_box.isChecked(),
            "shadow_style": self.shadow_style_box.currentData() or "soft",
            "background": self.background_box.isChecked(),
            "background_color": self.background_color,
        }

    def _show_background(self, *_):
        """A colour swatch icon and the colour's name; the button keeps the theme's own look, so
        it is greyed out like every other control while "Add background layer" is off."""
        colour, base = QColor(self.background_color), self.background_button.palette().button().color()
        pixmap = QPixmap(14, 14)
        pixmap.fill(colour)
        icon = QIcon(pixmap)
        dim = QPixmap(14, 14)  # disabled: the colour faded into the theme's button colour
        dim.fill(
            QColor(
                (colour.red() + 3 * base.red()) // 4,
                (colour.green() + 3 * base.green()) // 4,
                (colour.blue() + 3 * base.blue()) // 4,
            )
        )
        icon.addPixmap(dim, QIcon.Disabled)
        self.background_button.setIcon(icon)
        self.background_button.setText(self.background_color)
        self.background_button.setStyleSheet("")

    def _pick_background(self):
        colour = QColorDialog.getColor(QColor(self.background_color), self, "Background layer colour")
        if colour.isValid():
            self.background_color = colour.name()
            self._show_background()
            self._save()

    def _save(self, *_):
        self._values = self.values()
        cfg.save(self._values)

    # ----------------------------------------------------------------- jobs
    def run(self):
        """The button (and the Tools ▸ Scripts action): start a job with the current choices."""
        values = self.values()
        options = cfg.daemon_options(values)
        options["model"] = values["model"]
        api.start_job(None, None, values["output"], options)

    def cancel(self):
        job = self._job or active_job()
        if job is not None:
            job.cancel()

    def _watch(self, job):
        """Every job (button, action or script) reports here."""
        self._job = job
        job.progressed.connect(self._on_progress)
        job.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first progress
        self._message(mc.stage_text("reading pixels") + "…")

    def _on_progress(self, stage: str, fraction: float):
        waiting = ("starting engine", "loading model", "connecting to engine", "waiting", "queued")
        if stage.lower().startswith(waiting) or fraction <= 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(round(100 * min(1.0, max(0.0, fraction)))))
        self._message(mc.stage_text(stage) + "…")

    def _on_finished(self, job):
        if job is not self._job:
            return
        self._job = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 100)
        if job.error is not None:
            self.progress.setValue(0)
            self._message(job.error.message, error=job.error.code != "cancelled")
        else:
            self.progress.setValue(100)
            took = sum(job.timings.values())
            done = {
                "transparency-mask": "Transparency mask added",
                "selection": "Selection set",
                "new-layer": "Cut-out layer added",
                "apply": "Layer replaced by its cut-out",
            }
            text = done.get(job.snapshot.output, "Done")
            extras = [name for name in ("shadow", "background") if name in job.extra_nodes]
            if extras:
                text += ", " + " and ".join(extras) + (" layers" if len(extras) > 1 else " layer") + " added"
                text += f"; undo takes {job.undo_steps} steps"
            self._message(f"{text} ({took:.1f} s)." + (f" {job.note}" if job.note else ""))
        self.refresh_status()

    def _message(self, text: str, error: bool = False):
        self.stage_label.setToolTip(text)
        if error:
            self.stage_label.setText(f"<span style='color:#d33'>{html.escape(text)}</span>")
        else:
            self.stage_label.setText(html.escape(text))

    # ----------------------------------------------------------------- status
    def refresh_status(self):
        if self._probe is not None and self._probe.isRunning():
            return
        if not self.isVisible() and self._probe is not None:
            return
        self._probe = _StatusProbe()
        self._probe.answered.connect(self._on_status)
        self._probe.models.connect(self._on_models)
        self._probe.start()

    def _on_models(self, installed: list, served: str):
        self._served = served
        self._fill_models(installed, served)

    def _on_status(self, connected: bool, text: str, model: str):
        colour = "#3a3" if connected else "#c80"
        self.status_label.setText(f"<span style='color:{colour}'>●</span> {html.escape(text)}")
        self.status_label.setToolTip(text)

    def canvasChanged(self, canvas):  # required by DockWidget
        pass
