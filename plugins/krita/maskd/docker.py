"""The "Background Removal" docker: the button, the choices, engine status, progress, Cancel."""

from __future__ import annotations

import html

from krita import DockWidget
from PyQt5.QtCore import QThread, QTimer, pyqtSignal
from PyQt5.QtGui import QColor
from PyQt5.QtWidgets import (
    QCheckBox,
    QColorDialog,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from . import api
from . import settings as cfg
from .runner import JobError, active_job, load_config

DOCKER_ID = "maskd_background_removal"
TITLE = "Background Removal"
STATUS_INTERVAL_MS = 15000


def engine_model(hello: dict, status: dict) -> str:
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
    model = info.get("model")
    if isinstance(model, dict):
        model = model.get("preset") or model.get("name") or model.get("source")
    device = info.get("device")
    if isinstance(device, dict):
        device = device.get("name") or device.get("type")
    state = info.get("model_state")
    parts = ["engine connected"]
    if device:
        parts.append(str(device))
    if model:
        parts.append(str(model) + ("" if state in (None, "ready") else f" ({state})"))
    elif state:
        parts.append(f"model {state}")
    return " · ".join(parts)


class _StatusProbe(QThread):
    """Asks the daemon (if it runs) for its state without ever starting it or blocking the GUI."""

    answered = pyqtSignal(bool, str, str)
    presets = pyqtSignal(list)  # preset names the daemon knows (hello)

    def run(self):
        try:
            from . import maskd_client as mc

            config = load_config()
            with mc.connect(config.get("connection_file") or None, timeout=3.0) as client:
                names = [p.get("name") for p in client.hello_info.get("presets") or [] if isinstance(p, dict)]
                self.presets.emit([n for n in names if isinstance(n, str) and n])
                status = client.status()
                text = describe_engine(client.hello_info, status)
                model = engine_model(client.hello_info, status)
            self.answered.emit(True, text, model)
        except JobError as exc:
            self.answered.emit(False, exc.message, "")
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            try:
                autostart = load_config().get("autostart") and load_config().get("daemon_command")
            except JobError:
                autostart = False
            if getattr(exc, "code", "") == "unavailable":
                message = (
                    "engine not running — it starts on first use"
                    if autostart
                    else "engine not running — start it with `maskd serve`"
                )
            self.answered.emit(False, message, "")


class BackgroundRemovalDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle(TITLE)
        self._job = None
        self._probe = None
        self._values = cfg.load()
        body = QWidget(self)
        self.setWidget(body)
        layout = QVBoxLayout(body)

        self.status_label = QLabel("engine: checking…")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)

        form = QFormLayout()
        self.output_box = self._combo(cfg.OUTPUTS, self._values["output"])
        form.addRow("Output", self.output_box)
        self.quality_box = self._combo(cfg.QUALITIES, self._values["quality"])
        form.addRow("Quality", self.quality_box)
        self.model_box = self._combo(cfg.MODELS, self._values["model"])
        form.addRow("Model", self.model_box)
        layout.addLayout(form)
        self.refine_box = QCheckBox("Refine edges (hair, fur)")
        self.refine_box.setChecked(self._values["refine"])
        layout.addWidget(self.refine_box)
        self.decontaminate_box = QCheckBox("Decontaminate colours (cut-out outputs)")
        self.decontaminate_box.setChecked(self._values["decontaminate"])
        layout.addWidget(self.decontaminate_box)

        # product-photo finishing: separate, editable layers (nothing is flattened)
        shadow_row = QHBoxLayout()
        self.shadow_box = QCheckBox("Add shadow layer")
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
        self.background_box = QCheckBox("Add background layer")
        self.background_box.setToolTip("A paint layer in this colour at the bottom of the layer's group")
        self.background_box.setChecked(self._values["background"])
        background_row.addWidget(self.background_box)
        self.background_color = self._values["background_color"]
        self.background_button = QPushButton()
        self.background_button.setToolTip("Background colour")
        self.background_button.clicked.connect(self._pick_background)
        self.background_button.setEnabled(self._values["background"])
        self._show_background()
        background_row.addWidget(self.background_button)
        layout.addLayout(background_row)

        buttons = QHBoxLayout()
        self.run_button = QPushButton("Remove Background")
        self.run_button.clicked.connect(self.run)
        buttons.addWidget(self.run_button)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)

        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.progress.setTextVisible(False)
        layout.addWidget(self.progress)
        self.stage_label = QLabel("")
        self.stage_label.setWordWrap(True)
        self.stage_label.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        layout.addWidget(self.stage_label)
        layout.addStretch(1)

        for box in (self.output_box, self.quality_box, self.model_box, self.shadow_style_box):
            box.currentIndexChanged.connect(self._save)
        for box in (self.refine_box, self.decontaminate_box, self.shadow_box, self.background_box):
            box.toggled.connect(self._save)
        self.shadow_box.toggled.connect(self.shadow_style_box.setEnabled)
        self.background_box.toggled.connect(self.background_button.setEnabled)
        api.add_job_listener(self._watch)
        self._timer = QTimer(self)
        self._timer.timeout.connect(self.refresh_status)
        self._timer.start(STATUS_INTERVAL_MS)
        QTimer.singleShot(0, self.refresh_status)

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
            "refine": self.refine_box.isChecked(),
            "decontaminate": self.decontaminate_box.isChecked(),
            "shadow": self.shadow_box.isChecked(),
            "shadow_style": self.shadow_style_box.currentData() or "soft",
            "background": self.background_box.isChecked(),
            "background_color": self.background_color,
        }

    def _show_background(self):
        self.background_button.setText(self.background_color)
        light = QColor(self.background_color).lightness() > 140
        self.background_button.setStyleSheet(
            f"background-color: {self.background_color}; color: {'#000' if light else '#fff'};"
        )

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
        self._message("Reading the layer…")

    def _on_progress(self, stage: str, fraction: float):
        if stage in ("starting engine", "loading model", "connecting to engine") or fraction <= 0:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 100)
            self.progress.setValue(int(round(100 * min(1.0, max(0.0, fraction)))))
        self._message(stage[:1].upper() + stage[1:] + "…")

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
            self._message(f"{text} ({took:.1f} s).")
        self.refresh_status()

    def _message(self, text: str, error: bool = False):
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
        self._probe.presets.connect(self._add_presets)
        self._probe.start()

    def _add_presets(self, names: list):
        """Offer every preset the installed maskd knows, not only the built-in list."""
        for name in names:
            if self.model_box.findData(name) < 0:
                self.model_box.addItem(name, name)

    def _on_status(self, connected: bool, text: str, model: str):
        colour = "#3a3" if connected else "#c80"
        chosen = self.model_box.currentData() or ""
        note = ""
        if connected and chosen and model and chosen.lower() not in model.lower():
            note = (
                f"<br><small>The engine runs {html.escape(model)}; {html.escape(chosen)} is loaded "
                "when the engine is next started by this plugin (stop it with `maskd stop`).</small>"
            )
        self.status_label.setText(f"<span style='color:{colour}'>●</span> {html.escape(text)}{note}")

    def canvasChanged(self, canvas):  # required by DockWidget
        pass
