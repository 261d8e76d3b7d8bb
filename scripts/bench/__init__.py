"""Helpers of scripts/bench.sh (`make bench`); standard library only. Run as
`PYTHONPATH=scripts python3 -m bench COMMAND …` from the repository root (bench.sh does).

Modules: data (the test data), measure (the runners that measure one command), stats (reading
results, formatting figures), report (the report and its sections 1-4), report_watch,
report_fidelity, report_lease (sections 5, 6, 7); __main__ dispatches the commands below.

  bench tree DIR N            N files of 0.5-4 KiB in DIR/dir-NNN/ (100 per directory), seeded
  bench flat DIR N            N objects of 64 bytes directly in DIR (a flat S3 prefix)
  bench rss OUT.jsonl LOG -- CMD…  runs a `--schedule` process: peak RSS of its rclone child
                              during the first sync, then idle RSS of the process, then SIGTERM
  bench maxrss OUT.jsonl -- CMD…   peak RSS (getrusage) of a command run to completion
  bench trace PREFIX -- CMD…  runs an rclone listing with --dump headers; prints the lines
                              PREFIX_{heads,lists,others,lists_before_first,first_list}=…
  bench phases OUT.jsonl -- CMD…   runs our binary (CMD must include --log-format json) with
                              debug events and splits its wall time at "started rclone" and
                              "sync finished": before rclone, rclone, after rclone
  bench summary OUT.jsonl LABEL -- CMD…  runs our binary (CMD must include --log-format json)
                              once; records the `duration_seconds` and `kind` of its summary
  bench watch OUT.jsonl LABEL TREE OBJECTS RUNS -- CMD…  runs a `--watch` process (CMD must
                              include --log-format json) on TREE, whose objects the S3 server
                              stores under OBJECTS; after its first sync, RUNS times: rewrite
                              one file, time until the object holds the new bytes (polled),
                              then read that sync's summary; then SIGTERM
  bench lease OUT.jsonl ARGV_DIR -- CMD…  runs a one-shot upload (CMD must include
                              --log-format json and -v, and run rclone through the recorder that
                              writes into ARGV_DIR) once; records its rclone calls by
                              operation and the time spent taking and releasing the lease
  bench report RESULTS_DIR OUT.md  writes the report from the results and facts.env
"""
