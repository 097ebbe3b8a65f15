#
# SPDX-License-Identifier: GPL-3.0-or-later
#
"""GNU Radio blocks of the fedlora over-the-air federated LoRA testbed.

Blocks are thin wrappers over the fedlora_phy kernels; the kernels themselves are callable here too
(kernel_ofdm_modulate, kernel_ofdm_demodulate) so a notebook or QA test can compare a flowgraph with them.
"""

from .fedlora_python import *  # noqa: F401,F403
from .teaching import aircomp_round_loop, dict_to_history, dict_to_vectors, pdu_to_constellation  # noqa: F401
