# bench/plot/distribution.gp - share of new connections per worker, three ways.
# gnuplot -e "raw='DIR'; out='DIR'" distribution.gp   (reads raw/distribution.dat)
set terminal pngcairo size 1000,450 font "DejaVu Sans,10" noenhanced
set output out.'/distribution.png'
set title "Share of new connections accepted by each of 8 worker processes"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.3, 0
set xlabel "worker"
set ylabel "% of connections"
set key top right
plot raw.'/distribution.dat' using 2:xtic(1) title "SO_REUSEPORT, one socket per worker (portshare)" lc rgb "#3b6ea5", \
     '' using 3 title "one shared socket, epoll" lc rgb "#e08a2c", \
     '' using 4 title "one shared socket, EPOLLEXCLUSIVE" lc rgb "#8c8c8c", \
     12.5 with lines dt 2 lw 1.5 lc rgb "black" title "even share (12.5%)"
