"""The training losses under their contract name, ``csdn.losses``; they live in
:mod:`csdn.train.losses` beside the recipe that uses them."""

from csdn.train.losses import msel_loss, pairwise_distance, supcon_loss, wrt_triplet_loss

__all__ = ["msel_loss", "pairwise_distance", "supcon_loss", "wrt_triplet_loss"]
