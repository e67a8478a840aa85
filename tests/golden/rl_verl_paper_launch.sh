#!/usr/bin/env bash
# Written by skill-factory's rl stage: the exact verl GRPO launch, then the handoff that
# converts the last FSDP checkpoint to a Hugging Face folder (what the eval stage loads).
# Several nodes: run it on the head node of a running Ray cluster (launch/slurm_verl.sbatch).
set -euo pipefail
export HYDRA_FULL_ERROR=1
{python} -m verl.trainer.main_ppo \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=false \
    actor_rollout_ref.actor.use_kl_loss=true \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.actor.kl_loss_type=low_var_kl \
    data.train_files={out}/data/train.parquet \
    data.val_files={out}/data/val.parquet \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=4096 \
    data.seed=0 \
    actor_rollout_ref.model.path={model} \
    actor_rollout_ref.model.trust_remote_code=false \
    actor_rollout_ref.model.enable_gradient_checkpointing=true \
    actor_rollout_ref.model.enable_activation_offload=true \
    actor_rollout_ref.model.use_remove_padding=true \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr=1e-06 \
    actor_rollout_ref.actor.ppo_mini_batch_size=32 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1 \
    actor_rollout_ref.actor.fsdp_config.param_offload=false \
    actor_rollout_ref.actor.fsdp_config.optimizer_offload=false \
    actor_rollout_ref.actor.fsdp_config.forward_prefetch=true \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.ref.fsdp_config.param_offload=false \
    actor_rollout_ref.ref.fsdp_config.forward_prefetch=true \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=16 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.top_p=1.0 \
    actor_rollout_ref.rollout.dtype=bfloat16 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.8 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.rollout.max_num_batched_tokens=16384 \
    actor_rollout_ref.rollout.max_num_seqs=2048 \
    reward.reward_manager.name=naive \
    reward.custom_reward_function.path={reward} \
    reward.custom_reward_function.name=compute_score \
    trainer.total_epochs=50 \
    trainer.save_freq=25 \
    trainer.max_actor_ckpt_to_keep=2 \
    trainer.test_freq=25 \
    trainer.val_before_train=true \
    'trainer.logger=[console]' \
    trainer.project_name=skill-factory \
    trainer.experiment_name=qwen2_5_1_5b_instruct-rl-{fingerprint} \
    trainer.nnodes=1 \
    trainer.n_gpus_per_node=4 \
    trainer.default_local_dir={out}/checkpoints \
    trainer.resume_mode=auto \
    hydra.run.dir={out}/hydra \
    hydra.output_subdir=null \
    hydra.job.chdir=false
step=$(cat {out}/checkpoints/latest_checkpointed_iteration.txt)
{python} -m verl.model_merger merge --backend fsdp --local_dir "{out}/checkpoints/global_step_${{step}}/actor" --target_dir {out}/model
