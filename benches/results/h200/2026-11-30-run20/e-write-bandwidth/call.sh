#!/usr/bin/env bash
# Device call E (session 10): PyTorch's write-heavy bandwidth on the H200, to place the permute
# copy (1 read : k writes): copy_ (1:1), fill_ / zero_ (write only), an expand-copy writing each
# input row k times, and an index_select gathering T·k rows; GB/s of compulsory bytes.
nvidia-smi --query-gpu=name --format=csv,noheader
timeout 90 python3 wbw.py | tee $OUT/wbw.jsonl
