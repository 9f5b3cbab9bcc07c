# bench/report.sh - turns bench/run's raw data ($RAW/*.tsv) into
# bench/results/latest.md and the plots.  Sourced by bench/run.
#
# Raw files (tab-separated):
#   s1.tsv  repeat server mode rps requests cpu_s socket_errors non2xx machine_cpu_s
#   s2.tsv  repeat variant mode rps requests cpu_s socket_errors non2xx
#   s3.tsv, s4.tsv  variant events events_ok requests ok failed connect_errors
#           resets eof timeouts non2xx other extra (s4: median respawn ms)
#   s5.txt  bench_distribution's output
#   s6.tsv  repeat server p50 p90 p99 p999 max rps failed (microseconds)
#   rss.tsv server state pid role rss_kb
#   s8.tsv  server connections rss_before_kb rss_after_kb bytes_per_connection
#   s12a.tsv  repeat steering dps answered lost late server_cpu_s client_cpu_s
#             machine_cpu_s
#   s12b.tsv  steering reloads reloads_ok flows flows_broken state_breaks sent
#             answered unanswered late workers_alive median_reload_ms
#             old_workers_gone_s

# metric VALUE of one row: rps, requests per server CPU-second (eff), or
# requests per machine CPU-second (meff: busy time of all CPUs, client and
# softirq work included)
METRIC_AWK='function metric(m) { return m == "rps" ? $4 : m == "eff" ? ($6 > 0 ? $5 / $6 : 0) : ($9 > 0 ? $5 / $9 : 0) }'

# med FILE NAME MODE METRIC: median over the repeats
med() {
    [ -s "$1" ] || { echo nan; return; }
    awk -F'\t' -v n="$2" -v m="$3" -v k="$4" "$METRIC_AWK"' $2 == n && $3 == m {print metric(k)}' "$1" | median
}

# spread FILE NAME MODE METRIC: "min-max" over the repeats
spread() {
    [ -s "$1" ] || { echo -; return; }
    awk -F'\t' -v n="$2" -v m="$3" -v k="$4" "$METRIC_AWK"'
        $2 == n && $3 == m {v = metric(k); if (!c++ || v < lo) lo = v; if (v > hi) hi = v}
        END {if (c) printf "%.0f-%.0f", lo, hi; else print "-"}' "$1"
}

# ratio FILE A B MODE METRIC: median over repeats of A/B within each repeat
ratio() {
    [ -s "$1" ] || { echo nan; return; }
    awk -F'\t' -v a="$2" -v b="$3" -v m="$4" -v k="$5" "$METRIC_AWK"'
        $3 == m && $2 == a {x[$1] = metric(k)}
        $3 == m && $2 == b {y[$1] = metric(k)}
        END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$1" | median
}

# best_ratio FILE A MODE METRIC B C: median over repeats of A / max(B, C)
# within each repeat (portshare against the better anchor of that repeat)
best_ratio() {
    [ -s "$1" ] || { echo nan; return; }
    awk -F'\t' -v a="$2" -v m="$3" -v k="$4" -v b="$5" -v c="$6" "$METRIC_AWK"'
        $3 == m && $2 == a {x[$1] = metric(k)}
        $3 == m && ($2 == b || $2 == c) {v = metric(k); if (v > y[$1]) y[$1] = v}
        END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$1" | median
}

has() { [ -s "$1" ] && awk -F'\t' -v n="$2" '$2 == n {f = 1} END {exit !f}' "$1"; }

f0() { awk -v v="$1" 'BEGIN {if (v == "nan" || v == "") print "-"; else printf "%.0f", v}'; }
f2() { awk -v v="$1" 'BEGIN {if (v == "nan" || v == "") print "-"; else printf "%.2f", v}'; }
ms() { awk -v v="$1" 'BEGIN {if (v == "nan" || v == "") print "-"; else printf "%.2f", v / 1000}'; }

# ratio_cell A B MODE METRIC: "1.23" or "-" when either side is missing
ratio_cell() {
    if has "$RAW/s1.tsv" "$1" && has "$RAW/s1.tsv" "$2"; then
        f2 "$(ratio "$RAW/s1.tsv" "$1" "$2" "$3" "$4")"
    else
        echo "-"
    fi
}

failures_of() { # failures_of FILE VARIANT: "failed / requests"
    awk -F'\t' -v v="$2" '$1 == v {printf "%d / %d", $6, $4; f = 1} END {if (!f) print "not run"}' "$1" 2>/dev/null || echo "not run"
}

jain_of() { sed -n "s/^mode=$1 .* jain=\([0-9.]*\) maxmin=\([0-9.inf]*\) .*/\1 (max\/min \2)/p" "$RAW/s5.txt" 2>/dev/null; }

rss_sum() { # rss_sum SERVER STATE: total kB of the tree
    awk -F'\t' -v s="$1" -v st="$2" '$1 == s && $2 == st {t += $5; f = 1} END {if (f) printf "%.1f", t / 1024; else print "-"}' "$RAW/rss.tsv" 2>/dev/null || echo -
}

write_summary() {
    local ka=keepalive cl=close
    echo "## Summary"
    echo
    if [ -s "$RAW/s1.tsv" ] || [ -s "$RAW/s2.tsv" ]; then
        write_ratio_table
    fi
    write_event_summary
}

write_ratio_table() {
    local ka=keepalive cl=close
    echo "Servers pinned to CPU $SERVER_CPUS with $WORKERS worker(s) each, wrk pinned to CPU $CLIENT_CPUS"
    echo "(\`-t$WRK_THREADS -c$WRK_CONNS\`); ratios are medians over $REPEATS alternating repeats of ${DUR}s."
    echo
    echo "| ratio | keep-alive | connection-close |"
    echo "|---|---|---|"
    echo "| **portshare / better of nginx-deferred and h2o, requests per server CPU-second** | $(f2 "$(best_ratio "$RAW/s1.tsv" portshare $ka eff nginx-deferred h2o)") | $(f2 "$(best_ratio "$RAW/s1.tsv" portshare $cl eff nginx-deferred h2o)") |"
    echo "| **portshare / better of nginx-deferred and h2o, requests per machine CPU-second** | $(f2 "$(best_ratio "$RAW/s1.tsv" portshare $ka meff nginx-deferred h2o)") | $(f2 "$(best_ratio "$RAW/s1.tsv" portshare $cl meff nginx-deferred h2o)") |"
    echo "| portshare / nginx-deferred, requests per server CPU-second | $(ratio_cell portshare nginx-deferred $ka eff) | $(ratio_cell portshare nginx-deferred $cl eff) |"
    echo "| portshare / nginx-deferred, requests per machine CPU-second | $(ratio_cell portshare nginx-deferred $ka meff) | $(ratio_cell portshare nginx-deferred $cl meff) |"
    echo "| portshare / h2o, requests per machine CPU-second | $(ratio_cell portshare h2o $ka meff) | $(ratio_cell portshare h2o $cl meff) |"
    echo "| portshare / nginx, requests per server CPU-second | $(ratio_cell portshare nginx $ka eff) | $(ratio_cell portshare nginx $cl eff) |"
    echo "| portshare / nginx, requests/s | $(ratio_cell portshare nginx $ka rps) | $(ratio_cell portshare nginx $cl rps) |"
    echo "| portshare / h2o, requests per server CPU-second | $(ratio_cell portshare h2o $ka eff) | $(ratio_cell portshare h2o $cl eff) |"
    echo "| portshare / h2o, requests/s | $(ratio_cell portshare h2o $ka rps) | $(ratio_cell portshare h2o $cl rps) |"
    echo "| portshare / limit, requests per server CPU-second | $(ratio_cell portshare limit $ka eff) | $(ratio_cell portshare limit $cl eff) |"
    echo "| portshare / limit, requests/s | $(ratio_cell portshare limit $ka rps) | $(ratio_cell portshare limit $cl rps) |"
    echo "| nginx / limit, requests/s | $(ratio_cell nginx limit $ka rps) | $(ratio_cell nginx limit $cl rps) |"
    if [ -s "$RAW/s2.tsv" ]; then
        echo "| supervisor overhead: under \`portshare run\` / binding itself, requests/s | $(f2 "$(ratio "$RAW/s2.tsv" run own $ka rps)") | $(f2 "$(ratio "$RAW/s2.tsv" run own $cl rps)") |"
    fi
    echo
    write_losses
}

# Every place where portshare is more than 3% behind an anchor, in words.
write_losses() {
    local anchor mode metric r lines=()
    has "$RAW/s1.tsv" portshare || return 0
    for anchor in nginx nginx-deferred h2o; do
        has "$RAW/s1.tsv" "$anchor" || continue
        for mode in keepalive close; do
            for metric in eff meff rps; do
                r=$(ratio "$RAW/s1.tsv" portshare "$anchor" "$mode" "$metric")
                awk -v r="$r" 'BEGIN {exit !(r != "nan" && r < 0.97)}' || continue
                lines+=("- $(awk -v r="$r" 'BEGIN {printf "%.0f%%", (1 - r) * 100}') fewer $(case $metric in eff) echo "requests per server CPU-second" ;; meff) echo "requests per machine CPU-second" ;; *) echo "requests/s" ;; esac) than $anchor with $([ $mode = close ] && echo connection-close || echo keep-alive)")
            done
        done
    done
    [ ${#lines[@]} -gt 0 ] || return 0
    echo "Where portshare is behind an anchor (median ratio below 0.97):"
    echo
    printf '%s\n' "${lines[@]}"
    echo
}

write_event_summary() {
    local v
    if [ -s "$RAW/s3.tsv" ] || [ -s "$RAW/s4.tsv" ]; then
        echo "| event | failed / requests |"
        echo "|---|---|"
    fi
    if [ -s "$RAW/s3.tsv" ]; then
        local v
        for v in portshare-serve portshare-run-lighttpd portshare-run-lighttpd-sigterm nginx naive-reuseport; do
            echo "| $RELOADS reloads: $v | $(failures_of "$RAW/s3.tsv" "$v") |"
        done
    fi
    if [ -s "$RAW/s4.tsv" ]; then
        for v in portshare-serve nginx; do
            echo "| $KILLS worker SIGKILLs: $v | $(failures_of "$RAW/s4.tsv" "$v") |"
        done
    fi
    if [ -s "$RAW/s3.tsv" ] || [ -s "$RAW/s4.tsv" ]; then
        echo
    fi
    if [ -s "$RAW/s5.txt" ]; then
        echo "Distribution over 8 workers (Jain's index, 1 = even): reuseport $(jain_of reuseport);"
        echo "shared socket + epoll $(jain_of shared); shared + EPOLLEXCLUSIVE $(jain_of exclusive)."
        echo
    fi
    if [ -s "$RAW/s6.tsv" ]; then
        echo "Latency at $(cat "$RAW/s6_rate") req/s (p50 / p99 / p99.9, ms):" \
            "portshare $(lat_cell portshare), nginx $(lat_cell nginx)."
        echo
    fi
    if [ -s "$RAW/rss.tsv" ]; then
        echo "Memory under load (all processes, MiB): portshare $(rss_sum portshare load), nginx $(rss_sum nginx load)."
        echo
    fi
    if [ -s "$RAW/s8.tsv" ]; then
        echo "Memory per idle keep-alive connection (worker VmRSS, bytes):" \
            "$(awk -F'\t' '{printf "%s%s %s: %s", sep, $1, $2, $5; sep = "; "}' "$RAW/s8.tsv")."
        echo
    fi
    if [ -s "$RAW/s12a.tsv" ] || [ -s "$RAW/s12b.tsv" ]; then
        echo "UDP, eBPF flow table / \`--steering cbpf\`: echo datagrams/s $(f2 "$(udp_ratio dps)")," \
            "datagrams per CPU-second of client and server $(f2 "$(udp_ratio both)") (goal: >= 0.95)."
        awk -F'\t' '{printf "%s%s: %s of %s flows lost their state across %s reloads, %s of %s datagrams unanswered", \
            sep, $1 == "cbpf" ? "with --steering cbpf" : "With the flow table", $5, $4, $3, $9, $7; sep = "; "}
            END {if (NR) print "."}' "$RAW/s12b.tsv" 2>/dev/null
        echo
    fi
    if [ -s "$RAW/idle_cpu.tsv" ]; then
        awk -F'\t' '$4 > 1 {printf "**Warning:** %s %s (pid %s) used %s%% of a CPU while idle after the load runs;\nit shared CPU %s with the servers measured after it, so section 1 is suspect.\n\n", $1, $3, $2, $4, cpus}' \
            cpus="$SERVER_CPUS" "$RAW/idle_cpu.tsv"
    fi
}

lat_med() { awk -F'\t' -v n="$1" -v c="$2" '$2 == n {print $c}' "$RAW/s6.tsv" | median; }
lat_cell() { echo "$(ms "$(lat_med "$1" 3)") / $(ms "$(lat_med "$1" 5)") / $(ms "$(lat_med "$1" 6)")"; }

write_throughput() {
    local name mode
    [ -s "$RAW/s1.tsv" ] || return 0
    echo "## 1. Throughput: keep-alive and connection-close"
    echo
    echo "GET /index.html, a 5-byte file, on 127.0.0.1.  Each server runs on CPU $SERVER_CPUS (\`taskset\`,"
    echo "$WORKERS worker process(es); h2o: $WORKERS thread(s)), wrk on CPU $CLIENT_CPUS with $WRK_THREADS thread(s)"
    echo "and $WRK_CONNS connections, ${DUR}s per run, $REPEATS repeats in rotating order.  Server CPU is"
    echo "user+system time of every process of the server (/proc/PID/stat, all threads) over the run."
    echo "On loopback, part of the TCP receive work of each side is charged to whichever process"
    echo "runs when the softirq does: the same for every server, so the ratios hold.  \"CPU-s per s\""
    echo "near 1.0 means the server used its whole CPU; well below, it waited for the client (the"
    echo "limit server in keep-alive mode outruns one wrk thread) or for a CPU shared with other work."
    echo "Requests per CPU-second is the steadier figure on a busy machine."
    echo
    echo "| server | mode | req/s (median) | req/s range | req per server CPU-s (median) | req per machine CPU-s (median) | CPU-s per s | socket errors | non-2xx |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for mode in keepalive close; do
        for name in portshare nginx nginx-deferred h2o limit; do
            has "$RAW/s1.tsv" "$name" || continue
            local cpu err non
            cpu=$(awk -F'\t' -v n="$name" -v m="$mode" -v d="$DUR" '$2 == n && $3 == m {print $6 / d}' "$RAW/s1.tsv" | median)
            err=$(awk -F'\t' -v n="$name" -v m="$mode" '$2 == n && $3 == m {t += $7} END {print t + 0}' "$RAW/s1.tsv")
            non=$(awk -F'\t' -v n="$name" -v m="$mode" '$2 == n && $3 == m {t += $8} END {print t + 0}' "$RAW/s1.tsv")
            echo "| $name | $mode | $(f0 "$(med "$RAW/s1.tsv" "$name" "$mode" rps)") | $(spread "$RAW/s1.tsv" "$name" "$mode" rps) | $(f0 "$(med "$RAW/s1.tsv" "$name" "$mode" eff)") | $(f0 "$(med "$RAW/s1.tsv" "$name" "$mode" meff)") | $(f2 "$cpu") | $err | $non |"
        done
    done
    echo
    echo "Configurations: \`bench/conf/nginx.conf.in\` (reuseport, sendfile, access_log off, open_file_cache,"
    echo "no keep-alive request limit), \`bench/conf/h2o.conf.in\`, portshare: \`portshare serve DIR -w $WORKERS\`,"
    echo "limit: \`bench_limit -w $WORKERS\` (bench/limit.c: no parsing, a fixed response)."
    echo "h2o sets TCP_DEFER_ACCEPT (and TCP_FASTOPEN) on its listener by itself (strace shows it):"
    echo "accept returns once the request is there, a wakeup less per connection, which shows in"
    echo "connection-close mode.  nginx-deferred is nginx with \`listen ... deferred\` (the same option),"
    echo "the fair anchor for that mode; nginx is the configuration without it."
    echo "Machine CPU-s is the busy time of all CPUs together (/proc/stat, everything but idle and"
    echo "iowait) over the run: wrk's share and softirq work charged to any process are in it, so it"
    echo "counts what a server makes the kernel do for its connections; the machine must be otherwise"
    echo "idle for it to mean anything (see the load average above)."
    echo
    echo "![throughput](throughput.png)"
    echo
}

write_overhead() {
    [ -s "$RAW/s2.tsv" ] || return 0
    local mode v
    echo "## 2. Supervisor overhead"
    echo
    echo "The same worker, bench_limit, once as the worker of \`portshare run -w $WORKERS\` (sockets by"
    echo "LISTEN_FDS, READY=1) and once binding the port itself, both on CPU $SERVER_CPUS; CPU includes"
    echo "the supervisor's.  ~1.0 means the supervisor is not on the data path."
    echo
    echo "| variant | mode | req/s (median) | req per CPU-s (median) |"
    echo "|---|---|---|---|"
    for mode in keepalive close; do
        for v in run own; do
            echo "| $([ $v = run ] && echo 'under portshare run' || echo 'binding itself') | $mode | $(f0 "$(med "$RAW/s2.tsv" $v $mode rps)") | $(f0 "$(med "$RAW/s2.tsv" $v $mode eff)") |"
        done
    done
    echo
    echo "Ratio run/own, requests/s: keep-alive $(f2 "$(ratio "$RAW/s2.tsv" run own keepalive rps)"), close $(f2 "$(ratio "$RAW/s2.tsv" run own close rps)");"
    echo "requests per CPU-second: keep-alive $(f2 "$(ratio "$RAW/s2.tsv" run own keepalive eff)"), close $(f2 "$(ratio "$RAW/s2.tsv" run own close eff)")."
    echo
}

failure_table() { # failure_table FILE EVENT-WORD [EXTRA-HEADER]
    local extra=${3:-}
    echo "| variant | $2 done | requests | failed | refused | reset | EOF | timeout | non-2xx | other |${extra:+ $extra |}"
    echo "|---|---|---|---|---|---|---|---|---|---|${extra:+---|}"
    awk -F'\t' -v x="$extra" '{printf "| %s | %s/%s | %s | **%s** | %s | %s | %s | %s | %s | %s |", $1, $3, $2, $4, $6, $7, $8, $9, $10, $11, $12
        if (x != "") printf " %s |", $13; printf "\n"}' "$1"
    echo
}

write_events() {
    if [ -s "$RAW/s3.tsv" ]; then
        echo "## 3. Reload under load"
        echo
        echo "$RELOADS reloads, ${EVENT_GAP}s apart, while bench_client (bench/client.c) keeps $LOAD_CONNS"
        echo "connection-close requests in flight; $EVENT_WORKERS workers, no pinning.  portshare: \`portshare reload\`"
        echo "(waits for the new generation); lighttpd: socket-activated worker of \`portshare run"
        echo "--ready-delay 300ms --drain-signal INT\` (lighttpd's graceful stop), and once with the default"
        echo "drain signal TERM, which lighttpd takes as \"stop now\": the difference is what draining is"
        echo "worth.  nginx: \`nginx -s reload\`; naive: a second bench_limit joins the port"
        echo "with SO_REUSEPORT, then the first gets SIGTERM (closes its listeners, finishes what it"
        echo "accepted) - what portshare exists to prevent: the old sockets' accept queues are reset."
        echo
        failure_table "$RAW/s3.tsv" reloads
    fi
    if [ -s "$RAW/s4.tsv" ]; then
        echo "## 4. Worker crash under load"
        echo
        echo "SIGKILL one worker (alternating) $KILLS times, ${EVENT_GAP}s after its replacement is up, under the"
        echo "same connection-close load, $EVENT_WORKERS workers.  A killed worker's accepted connections die"
        echo "with it in every design; what differs is whether its listening socket's queue survives."
        echo
        failure_table "$RAW/s4.tsv" kills "median respawn ms"
        echo "![failures](failures.png)"
        echo
    fi
}

write_distribution() {
    [ -s "$RAW/s5.txt" ] || return 0
    echo "## 5. Distribution over 8 workers"
    echo
    echo "bench_distribution (bench/distribution.c): 8 worker processes, $DIST_N new connections from 4"
    echo "client threads; workers accept in batches until EAGAIN.  Not pinned."
    echo
    echo "| mode | accepted | Jain's index | max/min | per worker |"
    echo "|---|---|---|---|---|"
    sed -n 's/^mode=\([a-z]*\) .* accepted=\([0-9]*\) .* jain=\([0-9.]*\) maxmin=\([0-9.inf]*\) counts=\(.*\)/| \1 | \2 | \3 | \4 | \5 |/p' "$RAW/s5.txt" |
        sed 's/| reuseport |/| reuseport (portshare default) |/; s/| shared |/| one shared socket + epoll |/; s/| exclusive |/| one shared socket + EPOLLEXCLUSIVE |/'
    echo
    echo "![distribution](distribution.png)"
    echo
}

write_latency() {
    [ -s "$RAW/s6.tsv" ] || return 0
    local name
    echo "## 6. Latency at a fixed rate"
    echo
    echo "$(cat "$RAW/s6_rate") requests/s (half the slower server's keep-alive throughput), $LAT_CONNS keep-alive"
    echo "connections, open loop (bench_client --rate: each request is timed from its scheduled"
    echo "send time, so a stall is charged to every request it delays), ${LAT_DUR}s x $LAT_REPEATS alternating."
    echo "wrk2 is not packaged in Debian and h2load's rate mode reports no percentiles."
    echo
    echo "| server | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | achieved req/s | failed |"
    echo "|---|---|---|---|---|---|---|---|"
    for name in portshare nginx; do
        awk -F'\t' -v n="$name" '$2 == n {f = 1} END {exit !f}' "$RAW/s6.tsv" || continue
        echo "| $name | $(ms "$(lat_med $name 3)") | $(ms "$(lat_med $name 4)") | $(ms "$(lat_med $name 5)") | $(ms "$(lat_med $name 6)") | $(ms "$(lat_med $name 7)") | $(f0 "$(lat_med $name 8)") | $(f0 "$(lat_med $name 9)") |"
    done
    echo
    echo "![latency](latency.png)"
    echo
}

write_memory() {
    [ -s "$RAW/rss.tsv" ] || return 0
    echo "## 7. Memory (and idle CPU)"
    echo
    echo "VmRSS from /proc/PID/status: idle (just started) and under load (halfway through the first"
    echo "keep-alive run), $WORKERS worker(s) each."
    echo
    echo "| server | process | idle KiB | under load KiB |"
    echo "|---|---|---|---|"
    awk -F'\t' '{k = $1 SUBSEP $3; if (!(k in role)) {order[++n] = k; role[k] = $4; srv[k] = $1}
                 if ($2 == "idle") idle[k] = $5; else load[k] = $5}
        END {for (i = 1; i <= n; i++) {k = order[i]
             printf "| %s | %s | %s | %s |\n", srv[k], role[k], (k in idle) ? idle[k] : "-", (k in load) ? load[k] : "-"}}' "$RAW/rss.tsv"
    echo
    [ -s "$RAW/idle_cpu.tsv" ] || return 0
    echo "CPU used over 2 s without load, after all the throughput runs (a check that nothing spins):"
    echo
    echo "| server | process | pid | % of a CPU |"
    echo "|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s |\n", $1, $3, $2, $4}' "$RAW/idle_cpu.tsv"
    echo
}

write_idle_memory() {
    [ -s "$RAW/s8.tsv" ] || return 0
    echo "## 8. Memory per idle keep-alive connection"
    echo
    echo "One worker each (h2o: one thread), started fresh for every count. N connections each get one"
    echo "response and then wait in keep-alive (\`bench/idle_conns.py\`); the worker's VmRSS before and"
    echo "while they are held. Kernel socket memory is not in VmRSS."
    echo
    echo "| server | connections | VmRSS before KiB | VmRSS with them KiB | bytes per connection |"
    echo "|---|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5}' "$RAW/s8.tsv"
    echo
}

# The header describes the run and the machine; it is kept in raw/ so that
# --report-only can rebuild the report from the raw data alone.
write_header() {
    echo "# portshare benchmark results"
    echo
    echo "Written by \`bench/run $ARGS\` on $(date -u '+%Y-%m-%d %H:%M UTC') in ${ELAPSED}s"
    echo "(scenarios ${TIMES:-?}).  Raw data: [raw/](raw/)."
    echo
    echo "## Machine"
    echo
    machine
    echo
}

write_report() {
    if [ "$REPORT_ONLY" = 0 ] || [ ! -s "$RAW/header.md" ]; then
        write_header >"$RAW/header.md"
    fi
    cat "$RAW/header.md"
    write_summary
    write_throughput
    write_overhead
    write_events
    write_distribution
    write_latency
    write_memory
    write_idle_memory
    write_affinity
    write_stall
    write_sup_scale
    write_udp
}

# ---- scenarios 9 and 10 ---------------------------------------------------------------
write_affinity() {
    [ -s "$RAW/s9.tsv" ] || return 0
    local mode
    echo "## 9. --cpu-affinity against the plain hash"
    echo
    echo "\`portshare serve -w $NCPU\` twice, workers and wrk ($NCPU threads, $WRK_CONNS connections) on every"
    echo "CPU: once with \`--cpu-affinity\` (slot i pinned to CPU i, each connection steered to the"
    echo "worker of the CPU that received it), once with the default hash.  Medians of $REPEATS"
    echo "alternating runs of ${DUR}s; on a shared machine only large differences mean anything."
    echo
    echo "| mode | hash req/s | cpu-affinity req/s | ratio |"
    echo "|---|---|---|---|"
    for mode in keepalive close; do
        echo "| $mode | $(f0 "$(med "$RAW/s9.tsv" hash $mode rps)") | $(f0 "$(med "$RAW/s9.tsv" cpu-affinity $mode rps)") | $(f2 "$(ratio "$RAW/s9.tsv" cpu-affinity hash $mode rps)") |"
    done
    echo
}

write_stall() {
    [ -s "$RAW/s10.tsv" ] || return 0
    echo "## 10. A stalled worker"
    echo
    echo "One of $EVENT_WORKERS workers SIGSTOPped for ${STALL_S:-6} s under $LOAD_CONNS connection-close clients"
    echo "(bench/client.c, which gives up on a request after 2 s: a timeout is a failure), then"
    echo "continued.  portshare: default \`--stall-timeout 1s\`; nginx: reuseport.  The connections the"
    echo "frozen worker had accepted before it froze wait for it in either design; what differs is"
    echo "whether the ones queued behind it, and new ones, wait too."
    echo
    echo "| server | requests | failed | timeouts | p99 ms | max ms |"
    echo "|---|---|---|---|---|---|"
    awk -F'\t' '{printf "| %s | %s | %s | %s | %.1f | %.1f |\n", $1, $2, $4, $5, $6 / 1000, $7 / 1000}' "$RAW/s10.tsv"
    echo
}

write_sup_scale() {
    [ -s "$RAW/s11.tsv" ] || return 0
    echo "## 11. The supervisor at scale"
    echo
    echo "\`portshare run -w N\` with 4 TCP listeners (N x 4 held sockets) and \`sleep\` workers"
    echo "(\`--ready delay --ready-delay 0\`): start until every worker is ready, one reload (the"
    echo "command's round trip), then, with nothing queued and nothing changing, the supervisor's CPU"
    echo "over ${SUP_IDLE_S:-10} s (utime+stime, % of one CPU) and its system calls per second (\`strace -c\`, 3 s)."
    echo
    echo "| slots x listeners | start ms | reload ms | idle CPU % | syscalls/s | getsockopt/s |"
    echo "|---|---|---|---|---|---|"
    awk -F'\t' '{printf "| %s x 4 | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}' "$RAW/s11.tsv"
    echo
}

# ---- plots -------------------------------------------------------------------------------
plot_data() {
    local name
    if [ -s "$RAW/s1.tsv" ]; then
        {
            echo "# server keepalive_rps close_rps keepalive_per_cpu_s close_per_cpu_s"
            for name in portshare nginx nginx-deferred h2o limit; do
                has "$RAW/s1.tsv" "$name" || continue
                echo "$name $(f0 "$(med "$RAW/s1.tsv" $name keepalive rps)") $(f0 "$(med "$RAW/s1.tsv" $name close rps)") $(f0 "$(med "$RAW/s1.tsv" $name keepalive eff)") $(f0 "$(med "$RAW/s1.tsv" $name close eff)")"
            done
        } >"$RAW/throughput.dat"
    fi
    if [ -s "$RAW/s5.txt" ]; then
        awk '{for (i = 1; i <= NF; i++) {split($i, kv, "="); v[kv[1]] = kv[2]}
              m = v["mode"]; modes[++nm] = m; n = split(v["counts"], c, ",")
              for (w = 1; w <= n; w++) share[m, w] = 100 * c[w] / v["accepted"]; nw = n}
             END {printf "# worker"; for (j = 1; j <= nm; j++) printf " %s", modes[j]; printf "\n"
                  for (w = 1; w <= nw; w++) {printf "%d", w - 1
                  for (j = 1; j <= nm; j++) printf " %.2f", share[modes[j], w]; printf "\n"}}' \
            "$RAW/s5.txt" >"$RAW/distribution.dat"
    fi
    {
        echo "# variant failed requests"
        if [ -s "$RAW/s3.tsv" ]; then
            awk -F'\t' '{printf "\"reload: %s\" %s %s\n", $1, $6, $4}' "$RAW/s3.tsv"
        fi
        if [ -s "$RAW/s4.tsv" ]; then
            awk -F'\t' '{printf "\"SIGKILL: %s\" %s %s\n", $1, $6, $4}' "$RAW/s4.tsv"
        fi
    } >"$RAW/failures.dat"
}

plot_all() {
    local gp
    plot_data
    rm -f "$OUT"/*.png
    for gp in throughput distribution latency failures; do
        case $gp in
        throughput) [ -s "$RAW/throughput.dat" ] || continue ;;
        distribution) [ -s "$RAW/distribution.dat" ] || continue ;;
        latency) [ -s "$RAW/s6.tsv" ] || continue ;;
        failures) [ "$(wc -l <"$RAW/failures.dat")" -gt 1 ] || continue ;;
        esac
        gnuplot -e "raw='$RAW'; out='$OUT'; rate='$(cat "$RAW/s6_rate" 2>/dev/null || echo 0)'" \
            "$SRC/bench/plot/$gp.gp" || say "plot $gp failed"
    done
}

# ---- scenario 12 ----------------------------------------------------------------------
# UDP_AWK's metric(k) of an s12a.tsv row: dps, answered datagrams per
# CPU-second of the server (srv: supervisor and worker), of the client
# (cli), of both (both), or of the machine (meff: every CPU's busy time)
UDP_AWK='function per(c) { return c > 0 ? $4 / c : 0 }
function metric(k) { return k == "dps" ? $3 : k == "srv" ? per($7) : k == "cli" ? per($8) : k == "both" ? per($7 + $8) : per($9) }'

udp_med() { # udp_med STEERING METRIC
    [ -s "$RAW/s12a.tsv" ] || { echo nan; return; }
    awk -F'\t' -v v="$1" -v k="$2" "$UDP_AWK"' $2 == v {print metric(k)}' "$RAW/s12a.tsv" | median
}

udp_spread() { # udp_spread STEERING: "min-max" datagrams/s
    awk -F'\t' -v v="$1" '$2 == v {if (!c++ || $3 < lo) lo = $3; if ($3 > hi) hi = $3}
        END {if (c) printf "%.0f-%.0f", lo, hi; else print "-"}' "$RAW/s12a.tsv"
}

udp_ratio() { # udp_ratio METRIC: median over repeats of flow-table / cbpf
    [ -s "$RAW/s12a.tsv" ] || { echo nan; return; }
    awk -F'\t' -v k="$1" "$UDP_AWK"'
        $2 == "flow-table" {x[$1] = metric(k)}
        $2 == "cbpf" {y[$1] = metric(k)}
        END {for (r in x) if ((r in y) && y[r] > 0) print x[r] / y[r]}' "$RAW/s12a.tsv" | median
}

write_udp() {
    local v
    [ -s "$RAW/s12a.tsv" ] || [ -s "$RAW/s12b.tsv" ] || return 0
    echo "## 12. UDP flows: the eBPF flow table against the kernel's hash"
    echo
    echo "\`portshare run -l 'udp://127.0.0.1:PORT?flow_idle=2s'\`, once with the eBPF flow table (the"
    echo "default where it loads: each generation binds its own sockets, a flow stays with the socket"
    echo "that got its first datagram, replaced workers linger while their flows live) and once with"
    echo "\`--steering cbpf\` (one socket per slot for every generation, the kernel's hash)."
    echo
    if [ -s "$RAW/s12a.tsv" ]; then
        echo "Throughput: bench_udpecho (bench/udpecho.c: recvmmsg/sendmmsg, batches of 64) as the worker,"
        echo "$WORKERS worker(s) on CPU $SERVER_CPUS; bench_udpload (bench/udpload.c) on CPU $CLIENT_CPUS with"
        echo "$UDP_LOAD_FLOWS flows (connected sockets) of $UDP_LOAD_WINDOW datagrams of 64 bytes in flight each,"
        echo "each answer sending the next; ${DUR}s per run, $REPEATS alternating repeats.  On loopback the"
        echo "reuseport program runs in the sender's softirq, in the client's system calls: its cost"
        echo "shows in the client's CPU (getrusage) and in datagrams/s, not in the server's CPU"
        echo "(supervisor and worker, /proc/PID/stat).  Datagrams per CPU-second of client and server"
        echo "is the figure that holds on a shared machine; datagrams/s and machine CPU (busy time of all"
        echo "CPUs, other work included) move with whatever else runs."
        echo
        echo "| steering | datagrams/s (median) | datagrams/s range | per CPU-s, client + server | per client CPU-s | per server CPU-s | per machine CPU-s | lost | late |"
        echo "|---|---|---|---|---|---|---|---|---|"
        for v in flow-table cbpf; do
            awk -F'\t' -v v="$v" '$2 == v {f = 1} END {exit !f}' "$RAW/s12a.tsv" || continue
            echo "| $v | $(f0 "$(udp_med "$v" dps)") | $(udp_spread "$v") | $(f0 "$(udp_med "$v" both)") | $(f0 "$(udp_med "$v" cli)") | $(f0 "$(udp_med "$v" srv)") | $(f0 "$(udp_med "$v" meff)") | $(awk -F'\t' -v v="$v" '$2 == v {t += $5} END {print t + 0}' "$RAW/s12a.tsv") | $(awk -F'\t' -v v="$v" '$2 == v {t += $6} END {print t + 0}' "$RAW/s12a.tsv") |"
        done
        echo
        echo "Ratio flow-table / cbpf (median of the per-repeat ratios): datagrams per CPU-second of"
        echo "client and server **$(f2 "$(udp_ratio both)")**, of the client $(f2 "$(udp_ratio cli)"), of the server"
        echo "$(f2 "$(udp_ratio srv)"); datagrams/s **$(f2 "$(udp_ratio dps)")**.  Goal: a cost of at most 5 % (>= 0.95)."
        echo
    fi
    if [ -s "$RAW/s12b.tsv" ]; then
        echo "State across reloads: \`testworker --udp-state\` (tests/tools: counts each flow's datagrams,"
        echo "answers \"n=COUNT\", exits at once on SIGTERM as UDP servers do), $EVENT_WORKERS workers, no pinning;"
        echo "\`udpflows\` (tests/tools) with $UDP_FLOWS flows sending one datagram every $UDP_INTERVAL ms each, started"
        echo "1 s before $RELOADS \`portshare reload\`s ${EVENT_GAP}s apart, stopped 0.5 s after the last.  A flow"
        echo "lost its state when a process that had not seen it answered (n not the previous + 1); a"
        echo "datagram is unanswered after 1 s.  Workers alive: the supervisor's children 0.5 s after"
        echo "the last reload (with the flow table, old ones lingering for their flows), and how long"
        echo "after the flows stopped only the newest generation's were left (\`?flow_idle=2s\`; \"-\": not"
        echo "within 10 s)."
        echo
        echo "| steering | reloads done | flows | **flows that lost their state** | state breaks | unanswered / sent | late | workers alive | old ones gone after s | median reload ms |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        awk -F'\t' '{printf "| %s | %s/%s | %s | **%s** | %s | %s / %s | %s | %s | %s | %s |\n", $1, $3, $2, $4, $5, $6, $9, $7, $10, $11, $13, $12}' "$RAW/s12b.tsv"
        echo
    fi
}
