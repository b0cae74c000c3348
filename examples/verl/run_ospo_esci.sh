#!/usr/bin/env bash
# OSPO on ospo/ESCI-v0 with verl 0.9.1 (FSDP + vLLM). NOT RUN YET on GPUs by this project: see README.md here.
#   bash examples/verl/run_ospo_esci.sh                      # Qwen2.5-7B-Instruct, 8 GPUs, one node
#   SMOKE=1 bash examples/verl/run_ospo_esci.sh              # Qwen2.5-0.5B-Instruct, 1 GPU, 3 steps
#   NNODES=2 bash examples/verl/run_ospo_esci.sh             # on the head node of a running Ray cluster
# Extra arguments are Hydra overrides, e.g. algorithm.adv_estimator=ospo_rank or
#   algorithm.adv_estimator=ospo ospo.algo=grpo      (ospo-gym's GRPO, the control arm with the same Â)
set -euo pipefail
cd "$(dirname "$0")"
export OSPO_DATA="${OSPO_DATA:-$PWD/data/esci}"
mkdir -p "$OSPO_DATA"

# 1. verl's parquet dataset of the env's prompts (extra_info.prompt_id is what the reward and the oracle need).
if [ ! -f "$OSPO_DATA/train.parquet" ]; then
    python - <<'PY'
import os
import ospo_gym  # registers the env ids
from ospo_gym.integrations.verl import prompt_dataset

prompt_dataset("ospo/ESCI-v0", os.path.join(os.environ["OSPO_DATA"], "train.parquet"),
               env_kwargs={"split": "train", "retriever": "bm25", "locale": "us"})
PY
fi

# 2. The trainer: verl's main_ppo with this folder's config (which extends verl's ppo_trainer).
if [ "${SMOKE:-0}" = "1" ]; then
    set -- actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct \
        trainer.n_gpus_per_node=1 trainer.nnodes=1 trainer.total_training_steps=3 \
        data.train_batch_size=8 actor_rollout_ref.actor.ppo_mini_batch_size=8 \
        actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
        actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
        actor_rollout_ref.rollout.agent.num_workers=2 reward.num_workers=2 \
        trainer.experiment_name=esci_ospo_prop_qwen2.5_0.5b_smoke "$@"
else
    set -- trainer.n_gpus_per_node="${GPUS_PER_NODE:-8}" trainer.nnodes="${NNODES:-1}" "$@"
fi
python -m verl.trainer.main_ppo --config-path="$PWD" --config-name=ospo_esci "$@"
