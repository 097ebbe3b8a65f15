// Internal to fedlora_phy: the round planner with the MIMO design's warm start exposed (aircomp_waveform.cpp
// re-plans on the true channels from the beamformers of the plan used).
#pragma once

#include <Eigen/Dense>

#include <vector>

#include "fedlora/phy/aircomp_round.h"

namespace fedlora::phy::detail {

// Single stream (n_streams = 0): pc's policy. Multi-stream: per-carrier designs; carrier m starts from (*warm)[m]
// if warm is given, else from the previous carrier's beamformer; beamformers (if not null) receives every A.
RoundPlan plan_round(const LinkChannels& h, std::size_t n_streams, const PowerControlConfig& pc, int iterations,
                     const std::vector<Eigen::MatrixXcd>* warm, std::vector<Eigen::MatrixXcd>* beamformers);

}  // namespace fedlora::phy::detail
