"""Label Studio's JSON formats for genba's review queue: tasks out, annotations in.

Export (import into a Label Studio project whose labeling config is `label_config`): one task
per queued prediction, in Label Studio's basic JSON task format with a pre-annotation:

    {"data": {"image": <data: URI of the thumbnail, or "" without images>, "genba_prediction_id": 17,
              "genba_memory_id": "...", "source_id": "..."},
     "predictions": [{"model_version": "genba dmn-tf v12", "score": 0.41,
                      "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["cat"]}}]}]}

Import: Label Studio's JSON export (a list of tasks, each with "data" and "annotations"); the
last annotation of a task that is not cancelled and has a "choices" result names the label of
`data.genba_prediction_id`. Tasks without one are skipped and counted. Without thumbnails
(a memory not created with log_images) a site maps `source_id` to its own copy of the image.
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

from genba.serve.uploads import ApiError

FROM_NAME, TO_NAME = "label", "image"


def label_config(classnames: list[str]) -> str:
    """The labeling config (XML) the exported tasks fit: one image, one single choice among the classes."""
    choices = "\n".join(f"    <Choice value={quoteattr(n)}/>" for n in classnames)
    return (f'<View>\n  <Image name="{TO_NAME}" value="$image"/>\n  <Choices name="{FROM_NAME}" toName="{TO_NAME}" '
            f'choice="single">\n{choices}\n  </Choices>\n</View>\n')


def tasks(rows: list[dict], memory_id: str, method: str) -> list[dict]:
    """Queue rows (console.queue, with class names) -> Label Studio tasks with genba's prediction."""
    out = []
    for r in rows:
        result = [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [r["class_name"]]}}]
        out.append({"data": {"image": r.get("thumbnail") or "", "genba_prediction_id": r["id"], "genba_memory_id": memory_id,
                             "source_id": r["source_id"]},
                    "predictions": [{"model_version": f"genba {method} v{r['version']}", "score": round(r["confidence"], 6),
                                     "result": result}]})
    return out


def annotations(export) -> tuple[list[tuple[int, str]], int]:
    """A Label Studio JSON export -> ([(prediction id, class name)], skipped tasks); 400 on a wrong shape."""
    if not isinstance(export, list):
        raise ApiError(400, "send Label Studio's JSON export: a list of tasks with 'data' and 'annotations'")
    found, skipped = [], 0
    for i, task in enumerate(export):
        data = task.get("data") if isinstance(task, dict) else None
        pid = data.get("genba_prediction_id") if isinstance(data, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid < 1:
            raise ApiError(400, f"task {i} has no data.genba_prediction_id: only tasks exported by genba can be imported")
        choice = None
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
                continue
            for item in annotation.get("result") or []:
                value = item.get("value") if isinstance(item, dict) else None
                picked = value.get("choices") if isinstance(value, dict) else None
                if item.get("type") == "choices" and isinstance(picked, list) and len(picked) == 1 and isinstance(picked[0], str):
                    choice = picked[0]  # the last usable annotation wins
        if choice is None:
            skipped += 1
        else:
            found.append((pid, choice))
    return found, skipped
