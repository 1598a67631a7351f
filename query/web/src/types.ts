// The API's JSON shapes (runstream.query.models dataclasses, snake_case fields).
// Floats may arrive as "NaN"/"Infinity" strings: read them with Number().

export type Num = number | string;

export interface RunInfo {
  run_id: string; experiment: string; name: string; status: string; start_ms: number;
  end_ms: number; world_size: number; archived: boolean; fork_run_id: string;
  fork_step: number; attempts: number; columns?: Record<string, Num>;
}
export interface Drop { reason: string; events: number; points: number }
export interface RankInfo {
  rank: number; local_rank: number; node: string; status: string; start_ms: number;
  end_ms: number; error: string; points_logged: number; points_stored: number;
  dropped: Drop[]; producers_finished: number; attempt: number;
}
export interface Attempt {
  attempt: number; restart: number; resume: boolean; world_size: number; ranks: number[];
  status: string; start_ms: number; end_ms: number; error: string;
}
export interface MetricSummary { key: string; last: Num; last_step: number; min: Num; max: Num }
export interface Run {
  info: RunInfo;
  params: { key: string; value: string; type: string }[];
  tags: { key: string; value: string }[];
  artifacts: { name: string; uri: string; size_bytes: number; sha256: string }[];
  inputs: { name: string; uri: string; digest: string; role: string }[];
  metrics: MetricSummary[];
  ranks: RankInfo[];
  code: {
    git_commit: string; git_branch: string; git_remote: string; git_dirty: boolean;
    in_git_repo: boolean; diff_sha256: string; diff_uri: string; cwd: string; script: string;
  };
  env: {
    python_version: string; os: string; command: string; cpu_count: number; cpu_model: string;
    memory_bytes: number; packages: { name: string; version: string }[];
    gpus: { name: string; memory_bytes: number }[]; gpu_driver: string; cuda_version: string;
    argv: string[]; launcher: string; nnodes: number; nproc_per_node: number;
    runstream_editable?: boolean; host?: string;
  };
  param_conflicts: { key: string; rank: number; value: string; type: string;
                     producer_id: string; ts_ms: number }[];
  attempts: Attempt[];
  notes: { text: string; user: string; host: string; ts_ms: number }[];
  changes: { ts_ms: number; user: string; host: string; what: string }[];
}
export interface MetricHistory {
  run_id: string; key: string; ranks: number[]; steps: number[]; values: Num[];
  ts_ms: number[]; downsampled: boolean; min_values: Num[]; max_values: Num[];
  bucket_counts: number[]; total_points: number; aggregate?: string;
}
export interface RankHealth {
  rank: number; node: string; status: string; last_seen_ms: number; steps: number;
  step_time_p50_s: Num; step_time_p95_s: Num; lag_p50_ms: Num; lag_p95_ms: Num;
  lag_max_ms: Num; data_wait_p50_s: Num; device_memory_max_bytes: number;
  first_non_finite: { key: string; step: number; value: Num }[]; problems: string[];
}
export interface RankHealthReport {
  ranks: RankHealth[]; median_step_time_p50_s: Num; lag_key: string; suspects: number[];
  attempt: number;
}
export interface RankLag { key: string; ranks: number[]; steps: number[]; lag_ms: Num[][] }
export interface RankEnvelope {
  run_id: string; key: string; ranks: number[]; steps: number[]; mean: Num[]; min: Num[];
  max: Num[]; min_rank: number[]; max_rank: number[]; count: number[]; downsampled: boolean;
  total_steps: number; outlier_rank: number;
  departures: { rank: number; step: number; value: Num; median: Num }[];
  first_non_finite: { rank: number; step: number; value: Num }[];
}
export interface Comparison {
  runs: RunInfo[];
  fields: { section: string; key: string; values: string[]; differs: boolean }[];
  metrics: {
    key: string; goal: string; best_run: number; differs: boolean;
    stats: { present: boolean; last: Num; last_step: number; min: Num; max: Num; best: Num;
             best_step: number }[];
  }[];
}
export interface PointsUpdate {
  keys: string[]; key_index: number[]; ranks: number[]; steps: number[]; values: Num[];
  ts_ms: number[]; live: boolean;
}
export interface StatusUpdate { rank: number; status: string; error: string; ts_ms: number }
export interface IngestPartition {
  consumer_id: string; source: string; topic: string; partition: number;
  committed_offset: number; end_offset: number; lag: number; points_total: number;
  points_per_s: Num; batch_latency_ms: Num; ts_ms: number;
}
