#!/bin/bash
# usage: run.sh NAME EPOCHS [extra flags...]
name=$1; ep=$2; shift 2
cd /work/main
PETREC_DATA_DIR=/work/shared/data python -m petrec.models.sequential.run --threads 1 --data.dataset ml-1m --model.name sasrec --model.max_len 50 --model.hidden 64 --model.blocks 2 --model.heads 1 --model.dropout 0.2 --train.epochs $ep --train.batch_size 128 --train.lr 0.001 --train.warmup_ratio 0 --train.scheduler constant --train.weight_decay 0 --train.eval_every_steps 94 --train.progress false --train.trackers '[]' --train.output_dir /tmp/sas_$name --evaluate_test false "$@" > /tmp/probe/$name.log 2>&1
