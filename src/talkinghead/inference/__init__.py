"""One person's avatar and what drives it: frames of a person (shots), few-shot FT/FF (fewshot), avatar files
(avatar), the renderer (render), ONNX export (export), reenactment (reenact), full-frame pasting (paste), live
driving (live)."""
