"""A video through ``tools/predict.py``: frames read by OpenCV, predictions
drawn on each, written as an annotated MP4 at the source's frame rate."""

import cv2
import numpy as np
from detectron2.data.detection_utils import convert_image_to_rgb
from tqdm import tqdm

from gn_detection.predict.drawing import draw_predictions


class VideoError(RuntimeError):
    """A video file that OpenCV cannot open, or an output it cannot write."""


def predict_video(path: str, destination: str, predictor, metadata, confidence: float, input_format: str) -> int:
    """Writes ``destination`` (MP4) with each frame's detections of score >=
    ``confidence`` drawn; returns the number of frames."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise VideoError(f"video {path} cannot be opened")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer, frames = None, 0
    try:
        with tqdm(total=total, desc=path, unit="frame") as progress:
            while True:
                ok, frame_bgr = capture.read()
                if not ok:
                    break
                image = frame_bgr if input_format == "BGR" else np.ascontiguousarray(frame_bgr[:, :, ::-1])
                instances = predictor(image)
                shown = instances[instances.scores >= confidence]
                drawn = draw_predictions(convert_image_to_rgb(image, input_format), shown, metadata)
                if writer is None:
                    height, width = drawn.shape[:2]
                    writer = cv2.VideoWriter(destination, cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        raise VideoError(f"cannot write video {destination}")
                writer.write(np.ascontiguousarray(drawn[:, :, ::-1]))
                frames += 1
                progress.update()
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        raise VideoError(f"video {path} has no readable frames")
    return frames
