"""Dataset registry (being built): names are checked here so that config validation can use them."""
from catlab.errors import UserError

DATASETS: dict = {"shapes": None, "cifar10": None, "mnist": None}
PREFIXED = ("imagefolder:", "latents:")


def check_dataset_name(name: str) -> None:
    if name in DATASETS or any(name.startswith(p) and len(name) > len(p) for p in PREFIXED):
        return
    raise UserError(f"data.name must be one of {', '.join(DATASETS)}, imagefolder:PATH or latents:PATH, "
                    f"but got name={name!r}")
