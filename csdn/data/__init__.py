"""Dataset readers for SYSU-MM01, RegDB and LLCM, and the synthetic generator."""
