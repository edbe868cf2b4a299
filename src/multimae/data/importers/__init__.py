"""`multimae data import`: real datasets in their own formats -> the folder layout that
`pretrain` and `finetune` read (``out/<split>/<modality>/[<class>/]<name>.<ext>`` and a
``manifest.json``; see `multimae.data.folder`).

=========  ===========================================  =========================================
dataset    source                                       written
=========  ===========================================  =========================================
nyuv2      ``nyu_depth_v2_labeled.mat`` (MAT v7.3 =     train / val (val = the official test
           HDF5; needs h5py) [+ ``splits.mat``,         split): rgb PNG, depth 16-bit PNG in
           + the 40-class mapping]                      millimetres, semseg (NYUv2-40 or raw)
ade20k     ``ADEChallengeData2016/`` (images/ +         train / val: rgb JPEG (copied), semseg
           annotations/ {training, validation})         ids 0..149, 255 = unlabelled
imagenet   ``DIR/{train,val}/<class>/*.JPEG``           train / val: rgb in class folders
=========  ===========================================  =========================================

Every importer is resumable (each file is written atomically; a sample whose last file exists is
skipped) and marks its splits ``complete: false`` in the manifest until it has finished.
"""

from multimae.data.importers.ade20k import import_ade20k
from multimae.data.importers.imagenet import import_imagenet
from multimae.data.importers.nyuv2 import NYU40_CLASSES, import_nyuv2

IMPORTERS = {"nyuv2": import_nyuv2, "ade20k": import_ade20k, "imagenet": import_imagenet}

__all__ = ["IMPORTERS", "NYU40_CLASSES", "import_ade20k", "import_imagenet", "import_nyuv2"]
