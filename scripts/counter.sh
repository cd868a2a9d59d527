#!/bin/sh
# Prints 1..N, one line every 200 ms.
n=${1:-20}
i=1
while [ "$i" -le "$n" ]; do
    echo "count $i"
    i=$((i + 1))
    sleep 0.2
done
