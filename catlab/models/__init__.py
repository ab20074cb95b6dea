"""catlab models: the CAT generator, the discriminators, size variants and FLOP counts.

Read generator.py first (the blocks, the stage heads, SIZES at the bottom), then discriminator.py.
"""
from catlab.models.discriminator import (AggregatedDiscriminator, ConcatDiscriminator, DISCRIMINATORS,
                                         ScalewiseDiscriminator, build_discriminator)
from catlab.models.flops import (count_flops, count_params, discriminator_gflops, discriminator_stats,
                                 generator_gflops, generator_stats)
from catlab.models.generator import SIZES, Generator, build_generator, resample, scale_sizes

__all__ = ["SIZES", "DISCRIMINATORS", "Generator", "ScalewiseDiscriminator", "AggregatedDiscriminator",
           "ConcatDiscriminator", "build_generator", "build_discriminator", "count_flops", "count_params",
           "generator_gflops", "generator_stats", "discriminator_gflops", "discriminator_stats",
           "resample", "scale_sizes"]
