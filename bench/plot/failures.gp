# bench/plot/failures.gp - failed requests during reloads and worker kills.
# gnuplot -e "raw='DIR'; out='DIR'" failures.gp   (reads raw/failures.dat)
set terminal pngcairo size 1000,540 font "DejaVu Sans,10" noenhanced
set output out.'/failures.png'
set title "Failed requests under connection-close load (label: failed / requests)"
set style fill solid 0.85 border -1
set boxwidth 0.6
set grid ytics
set yrange [0:*]
set offsets 0.5, 0.5, graph 0.12, 0
set ylabel "failed requests"
set xtics rotate by -20 left
set bmargin 9
unset key
plot raw.'/failures.dat' using 0:2:xtic(1) with boxes lc rgb "#3b6ea5", \
     '' using 0:2:(sprintf("%d / %d", $2, $3)) with labels offset 0,0.8
