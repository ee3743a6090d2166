"""``GNCheckpointer``: detectron2's ``DetectionCheckpointer`` whose files are
read by :mod:`gn_detection.checkpoint.safe_load`.

It saves, resumes and converts exactly like ``DetectionCheckpointer`` (same
file formats, same name matching for Detectron/Caffe2 pickles); only reading
changes: ``.pth``/``.pyth`` through ``torch.load(weights_only=True)``, ``.pkl``
through the array-only unpickler, and every unreadable file raises a
``CheckpointError`` naming it.
"""

from detectron2.checkpoint import DetectionCheckpointer

from gn_detection.checkpoint.safe_load import CheckpointError, load_pickle, load_torch


class GNCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with safe loading (see the module docstring)."""

    def _load_file(self, filename):
        if filename.endswith(".pkl"):
            return self._load_pickle(filename)
        if filename.endswith(".pyth"):
            return self._load_pycls(filename)
        return super()._load_file(filename)  # .pth: URL-query handling, then _torch_load below

    def _torch_load(self, f):
        return load_torch(f)

    def _load_pickle(self, filename):
        data = load_pickle(filename)
        if not isinstance(data, dict):
            raise CheckpointError(f"{filename}: expected a dict at the top of the pickle, got {type(data).__name__}")
        if "model" in data and "__author__" in data:  # detectron2 format
            self.logger.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        # Detectron / Caffe2 format: detection models keep their weights under "blobs"
        blobs = data.get("blobs", data)
        blobs = {name: value for name, value in blobs.items() if not name.endswith("_momentum")}
        return {"model": blobs, "__author__": "Caffe2", "matching_heuristics": True}

    def _load_pycls(self, filename):
        data = load_torch(filename)
        if not isinstance(data, dict) or "model_state" not in data:
            raise CheckpointError(f"{filename}: a pycls checkpoint (.pyth) must contain 'model_state'")
        state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
