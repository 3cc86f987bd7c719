"""
Times SAM 2 prompt decoding alone: the shared decoder's ``prepare`` and ``decode_multimask`` (or
the official ``MaskDecoder.forward``) on a fixed random embedding, Hiera-T decoder at random
init, a point grid at 1024 px, as the pipeline runs it. Prints seconds per image per stage
(wall clock, and process CPU time, which moves less when other jobs share the machine), the
kept prompts, and the floating-point operations of the matrix products (counted by torch's
``FlopCounterMode`` on the warm-up image) with the achieved GFLOPS.

    OMP_NUM_THREADS=2 python tools/decoder_bench.py --side 16 --repeat 3
    python tools/decoder_bench.py --side 16 --profile   # torch.profiler table of one image
"""
import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from refseg_d2.modeling.proposals.sam2_prompter import SAM2Prompter, build_sam2_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=16, help="points per side of the grid")
    parser.add_argument("--chunk", type=int, default=24, help="POINTS_PER_BATCH")
    parser.add_argument("--thresh", type=float, default=0.4, help="PRED_IOU_THRESH")
    parser.add_argument("--input-size", type=int, default=1024)
    parser.add_argument("--decoder", default="shared", choices=("shared", "official"))
    parser.add_argument("--repeat", type=int, default=3, help="timed images after one warm-up")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table")
    args = parser.parse_args()

    torch.manual_seed(0)
    sam = build_sam2_model("configs/sam2/sam2_hiera_t.yaml", "", args.input_size, random_init=True)
    prompter = SAM2Prompter(sam, args.side, args.chunk, args.thresh, args.decoder)
    e = args.input_size // 16
    gen = torch.Generator().manual_seed(0)
    embedding = torch.randn(1, 256, e, e, generator=gen)
    high_res = [torch.randn(1, 32, 4 * e, 4 * e, generator=gen),
                torch.randn(1, 64, 2 * e, 2 * e, generator=gen)]

    stages, cpu_stages, flops, counting = {}, {}, {}, [False]

    def timed(name, fn):
        def run(*args):
            if counting[0]:
                with FlopCounterMode(display=False) as counter:
                    out = fn(*args)
                flops[name] = flops.get(name, 0) + counter.get_total_flops()
                return out
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn(*args)
            stages[name] = stages.get(name, 0.0) + time.perf_counter() - t0
            cpu_stages[name] = cpu_stages.get(name, 0.0) + time.process_time() - c0
            return out
        return run

    shared = prompter.shared
    if args.decoder == "official":
        prompter._decode = timed("decoder", prompter._decode)
    else:
        shared.prepare = timed("prepare", shared.prepare)
        shared.transformer_stage = timed("transformer", shared.transformer_stage)
        shared.upscale_stage = timed("upscaling", shared.upscale_stage)

    def once():
        stages.clear()
        cpu_stages.clear()
        with torch.no_grad():
            t0, c0 = time.perf_counter(), time.process_time()
            out = prompter.decode_point_grid(embedding, high_res)
            return time.perf_counter() - t0, time.process_time() - c0, out

    counting[0] = True
    once()
    counting[0] = False
    prompts = args.side ** 2
    times, cpu, per_stage, cpu_per_stage = [], [], [], []
    for _ in range(args.repeat):
        dt, dc, (logits, _) = once()
        times.append(dt)
        cpu.append(dc)
        per_stage.append(dict(stages))
        cpu_per_stage.append(dict(cpu_stages))
    print("decoder {} grid {}x{} chunk {}: kept {} of {} prompts".format(
        args.decoder, args.side, args.side, args.chunk, logits.shape[0], prompts))
    print("s / image: " + " ".join("{:.3f}".format(t) for t in times)
          + "  (min {:.3f}); process CPU s: ".format(min(times))
          + " ".join("{:.2f}".format(t) for t in cpu))
    best = per_stage[times.index(min(times))]
    print("stages of the fastest image (s): " + ", ".join(
        "{} {:.3f}".format(k, v) for k, v in best.items()))
    best_cpu = cpu_per_stage[cpu.index(min(cpu))]
    print("stages of the image of least process CPU time (CPU s): " + ", ".join(
        "{} {:.3f}".format(k, v) for k, v in best_cpu.items()))
    total = sum(flops.values())
    print("GFLOP per image (matrix products, torch FlopCounterMode): {:.1f} = ".format(total / 1e9)
          + ", ".join("{} {:.1f}".format(k, v / 1e9) for k, v in flops.items())
          + "; per prompt {:.3f}".format(total / prompts / 1e9))
    print("achieved GFLOPS (fastest image): {:.1f} overall, ".format(total / min(times) / 1e9)
          + ", ".join("{} {:.1f}".format(k, flops[k] / v / 1e9) for k, v in best.items()))
    print("GFLOP per process CPU second: {:.1f} overall, ".format(total / min(cpu) / 1e9)
          + ", ".join("{} {:.1f}".format(k, flops[k] / v / 1e9) for k, v in best_cpu.items()))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            once()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
