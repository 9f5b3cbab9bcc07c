# bench/plot/latency.gp - latency by percentile at a fixed request rate.
# gnuplot -e "raw='DIR'; out='DIR'; rate='N'" latency.gp
# (reads raw/spectrum-SERVER-REPEAT.dat: percentile latency_ms 1/(1-p))
set terminal pngcairo size 1000,480 font "DejaVu Sans,10" noenhanced
set output out.'/latency.png'
set title sprintf("Latency by percentile at %s requests/s, open loop (each line: one run)", rate)
set logscale x
set logscale y
set xrange [1:100000]
set xtics ("0%%" 1, "50%%" 2, "90%%" 10, "99%%" 100, "99.9%%" 1000, "99.99%%" 10000, "99.999%%" 100000)
set xlabel "percentile"
set ylabel "latency (ms)"
set grid xtics ytics mytics
set key bottom right
files = system("ls ".raw."/spectrum-*.dat")
name(f) = f[strstrt(f, "spectrum-") + 9:strlen(f) - 4]
color(f) = strstrt(f, "nginx") > 0 ? 0xe08a2c : 0x3b6ea5
plot for [f in files] f using 3:2 with linespoints pt 7 ps 0.6 lw 1.5 lc rgb color(f) title name(f)
