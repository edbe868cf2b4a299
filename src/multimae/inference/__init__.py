"""Predictions on your own images: load any checkpoint, predict from any subset of inputs with
any mask, get outputs back in data units, and draw or save them.

    from multimae.inference import load_model, predict, prediction_figure, save_prediction

    model = load_model("multimae-b_98_rgb+-depth-semseg_1600e_multivit-afff3f8c.pth")
    pred = predict(model, {"rgb": "photo.jpg"}, num_visible=98, seed=0)
    pred.outputs["depth"], pred.outputs["semseg"]      # (1, 224, 224) and (224, 224) ids
    prediction_figure(pred).save("figure.png")
"""

from multimae.inference.inputs import FITS, RawInput, fit_size, read_input
from multimae.inference.load import load_model
from multimae.inference.predict import Prediction, predict
from multimae.inference.render import PredictionPictures, prediction_figure, prediction_pictures, save_prediction

__all__ = [
    "FITS", "Prediction", "PredictionPictures", "RawInput", "fit_size", "load_model", "predict", "prediction_figure",
    "prediction_pictures", "read_input", "save_prediction",
]
