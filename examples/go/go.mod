module example.com/portshare-hello

go 1.19
