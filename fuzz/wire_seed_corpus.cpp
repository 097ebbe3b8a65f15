// Writes the fuzzer's seed corpus: valid encoded messages covering every message type, every dtype, scalars,
// empty and zero-length tensors, the longest shapes, and several tensors per message.
// Usage: wire_seed_corpus <directory>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "fedlora/wire/message.h"

using namespace fedlora::wire;

namespace {

Tensor tensor(const std::string& name, DType dtype, std::vector<std::uint64_t> shape) {
    Tensor t;
    t.name = name;
    t.dtype = dtype;
    t.shape = std::move(shape);
    t.data.resize(t.numel() * dtype_size(dtype));
    for (std::size_t i = 0; i < t.data.size(); ++i)
        t.data[i] = static_cast<std::uint8_t>(i * 37 + 11);
    return t;
}

Message message(MessageType type, std::uint32_t seq, std::vector<Tensor> tensors) {
    Message m;
    m.type = type;
    m.run_id = 0x0123456789abcdefull + seq;
    m.round = seq * 3;
    m.client_id = seq % 5;
    m.seq = seq;
    m.tensors = std::move(tensors);
    return m;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s <directory>\n", argv[0]);
        return 2;
    }
    std::vector<Message> seeds;
    std::uint32_t seq = 0;
    for (std::uint16_t t = 1; t <= 11; ++t)  // every type, no tensors
        seeds.push_back(message(static_cast<MessageType>(t), seq++, {}));
    seeds.push_back(message(MessageType::Update, seq++, {make_f32("update", {1.0f, -2.0f, 0.5f, 4.0f}, {2, 2})}));
    seeds.push_back(message(MessageType::UpdateRms, seq++, {tensor("rms", DType::F64, {})}));  // a scalar
    seeds.push_back(message(MessageType::CsiReport, seq++,
                            {tensor("gain", DType::C64, {2, 3}), tensor("snr_db", DType::F32, {2, 3}),
                             tensor("device", DType::I32, {2}), tensor("stamp", DType::I64, {1})}));
    seeds.push_back(message(MessageType::RoundStart, seq++,
                            {tensor("support", DType::U8, {16}), tensor("", DType::U8, {0}),  // empty name and data
                             tensor("zero", DType::F32, {4, 0, 3})}));
    seeds.push_back(message(MessageType::Aggregate, seq++,
                            {tensor("deep", DType::U8, {1, 2, 1, 2, 1, 2, 1, 2})}));  // ndim 8, the default limit
    seeds.push_back(message(MessageType::PowerPlan, seq++,
                            {tensor(std::string(40, 'n'), DType::F32, {3}), tensor("b", DType::F64, {2, 2}),
                             tensor("c", DType::U8, {5}), tensor("precoders", DType::C128, {2, 3}),
                             tensor("eta", DType::C128, {})}));
    int written = 0;
    for (const auto& m : seeds) {
        const auto bytes = encode(m);
        const std::string path = std::string(argv[1]) + "/seed-" + std::to_string(written) + ".bin";
        FILE* f = std::fopen(path.c_str(), "wb");
        if (!f || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fclose(f) != 0) {
            std::fprintf(stderr, "wire_seed_corpus: cannot write '%s'\n", path.c_str());
            return 1;
        }
        ++written;
    }
    std::printf("wire_seed_corpus: %d seed messages in %s\n", written, argv[1]);
    return 0;
}
