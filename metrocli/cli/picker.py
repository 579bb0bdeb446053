"""Interactive point picker of ``metro measure`` (tkinter, from the standard library).

The photo is shown scaled to fit the screen. Click two points to measure a line: the distance appears at
once on the picture and in the status bar. Backspace removes the last line, Escape cancels a started line,
Enter (or closing the window) finishes. Clicks are converted back to pixels of the displayed photo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metrocli.errors import MetroError, MetroUsageError
from metrocli.geometry.measure import Measurement

if TYPE_CHECKING:
    from metrocli.pipeline.measure import MeasureSession


def pick_and_measure(
    session: MeasureSession, *, max_size: tuple[int, int] = (1400, 900)
) -> list[Measurement]:
    """Open the picker on ``session.photo`` and return the measurements of the picked lines.

    Raises :class:`MetroUsageError` when
    tkinter is not available or no window can be opened.
    """
    try:
        import tkinter as tk
    except ImportError:
        raise MetroUsageError(
            "the interactive picker needs tkinter, which this Python lacks; give --line U1,V1,U2,V2"
        ) from None
    from PIL import Image, ImageTk

    from metrocli.io.annotate import label_text

    try:
        root = tk.Tk()
    except tk.TclError as exc:
        raise MetroUsageError(f"cannot open the picker window ({exc}); give --line U1,V1,U2,V2") from None
    root.title(f"metro measure — {session.photo.path.name}: click two points per line, Enter to finish")
    image = Image.fromarray(session.photo.image)
    screen_w = max(320, min(max_size[0], root.winfo_screenwidth() - 80))
    screen_h = max(240, min(max_size[1], root.winfo_screenheight() - 160))
    scale = min(1.0, screen_w / image.width, screen_h / image.height)
    shown = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    photo_tk = ImageTk.PhotoImage(shown)
    canvas = tk.Canvas(root, width=shown.width, height=shown.height, cursor="crosshair", highlightthickness=0)
    canvas.pack()
    canvas.create_image(0, 0, anchor="nw", image=photo_tk)
    status = tk.StringVar(value="Click the first point of a line.")
    tk.Label(root, textvariable=status, anchor="w").pack(fill="x")

    measurements: list[Measurement] = []
    items: list[list[int]] = []
    pending: dict[str, Any] = {}

    def to_photo(x: float, y: float) -> tuple[float, float]:
        return (round((x + 0.5) / scale - 0.5, 1), round((y + 0.5) / scale - 0.5, 1))

    def on_click(event: Any) -> None:
        u, v = to_photo(event.x, event.y)
        if "start" not in pending:
            pending["start"] = (u, v, event.x, event.y)
            pending["dot"] = canvas.create_oval(
                event.x - 4, event.y - 4, event.x + 4, event.y + 4, outline="black", fill="yellow"
            )
            status.set(f"Start ({u:g}, {v:g}); click the end point.")
            return
        u1, v1, x1, y1 = pending.pop("start")
        canvas.delete(pending.pop("dot"))
        try:
            (m,) = session.measure([(u1, v1, u, v)])
        except MetroError as exc:
            status.set(f"Not measured: {exc}")
            return
        measurements.append(m)
        ids = [
            canvas.create_line(x1, y1, event.x, event.y, fill="black", width=5),
            canvas.create_line(x1, y1, event.x, event.y, fill="yellow", width=2),
        ]
        for x, y in ((x1, y1), (event.x, event.y)):
            ids.append(canvas.create_oval(x - 4, y - 4, x + 4, y + 4, outline="black", fill="yellow"))
        text = f"{len(measurements)}: {label_text(m)}"
        mx, my = (x1 + event.x) / 2, (y1 + event.y) / 2 - 14
        label = canvas.create_text(mx, my, text=text, fill="white", font=("TkDefaultFont", 12, "bold"))
        bbox = canvas.bbox(label)
        ids.append(canvas.create_rectangle(*bbox, fill="#202024", outline="yellow"))
        canvas.tag_raise(label)
        ids.append(label)
        items.append(ids)
        status.set(f"Line {text}. Click the next line, Backspace to undo, Enter to finish.")

    def on_undo(_event: Any = None) -> None:
        if measurements:
            measurements.pop()
            for item in items.pop():
                canvas.delete(item)
            status.set(f"Removed the last line; {len(measurements)} measured.")

    def on_escape(_event: Any = None) -> None:
        if "start" in pending:
            pending.pop("start")
            canvas.delete(pending.pop("dot"))
            status.set("Line cancelled. Click the first point of a line.")

    canvas.bind("<Button-1>", on_click)
    root.bind("<BackSpace>", on_undo)
    root.bind("<Escape>", on_escape)
    root.bind("<Return>", lambda _e: root.destroy())
    root.bind("<KP_Enter>", lambda _e: root.destroy())
    root.protocol("WM_DELETE_WINDOW", root.destroy)
    root.mainloop()
    return measurements
