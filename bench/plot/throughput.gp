# bench/plot/throughput.gp - requests/s and requests per server CPU-second.
# gnuplot -e "raw='DIR'; out='DIR'" throughput.gp   (reads raw/throughput.dat)
set terminal pngcairo size 1100,480 font "DejaVu Sans,10" noenhanced
set output out.'/throughput.png'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.12, 0
set key top left
set format y "%.0s%c"
set multiplot layout 1,2 title "GET of a 5-byte file on 127.0.0.1, each server on its own CPU (median of repeats)"
set title "requests/s"
plot raw.'/throughput.dat' using 2:xtic(1) title "keep-alive" lc rgb "#3b6ea5", \
     '' using 3 title "connection-close" lc rgb "#e08a2c", \
     '' using ($0-1/6.):2:(sprintf("%.0fk", $2/1000)) with labels offset 0,0.7 notitle, \
     '' using ($0+1/6.):3:(sprintf("%.0fk", $3/1000)) with labels offset 0,0.7 notitle
set title "requests per server CPU-second (user+sys of all server processes)"
plot raw.'/throughput.dat' using 4:xtic(1) title "keep-alive" lc rgb "#3b6ea5", \
     '' using 5 title "connection-close" lc rgb "#e08a2c", \
     '' using ($0-1/6.):4:(sprintf("%.0fk", $4/1000)) with labels offset 0,0.7 notitle, \
     '' using ($0+1/6.):5:(sprintf("%.0fk", $5/1000)) with labels offset 0,0.7 notitle
unset multiplot
