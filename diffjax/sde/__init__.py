"""Forward SDEs as frozen pytree dataclasses: VP, sub-VP, VE (scalar kernels) and CLD."""

from diffjax.sde._base import batch_sum, broadcast_to_data
from diffjax.sde._cld import CLD
from diffjax.sde._scalar import VESDE, SubVPSDE, VPSDE

__all__ = ["VPSDE", "SubVPSDE", "VESDE", "CLD", "broadcast_to_data", "batch_sum"]
