import onnxruntime

# onnxruntime logs errors it also raises as exceptions; keep test output readable.
onnxruntime.set_default_logger_severity(4)
