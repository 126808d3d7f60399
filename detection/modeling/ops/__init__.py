"""Pure tensor functions of boxes the model is built from: box coding, IoU matching,
label sampling, RoIAlign, NMS and the losses. None holds weights; each is tested alone."""
