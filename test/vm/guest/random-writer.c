/*
 * The VM tests' writer when fio is not installed: random-pattern O_DIRECT writes, one at a
 * time (no two writes in flight can overlap), offsets aligned to the smallest block like fio.
 *
 *   random-writer DEVICE BYTES SEED MIN_KIB MAX_KIB REGION_OFFSET REGION_SIZE RATE_KIBPS
 *
 * REGION_SIZE 0 means the whole device; RATE_KIBPS 0 means no pacing.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <time.h>
#include <unistd.h>

static uint64_t state;

static uint64_t next(void)
{
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	return state;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 9) {
		fprintf(stderr, "usage: %s DEVICE BYTES SEED MIN_KIB MAX_KIB REGION_OFFSET REGION_SIZE RATE_KIBPS\n", argv[0]);
		return 2;
	}
	uint64_t bytes = strtoull(argv[2], NULL, 0), minb = strtoull(argv[4], NULL, 0) * 1024;
	uint64_t maxb = strtoull(argv[5], NULL, 0) * 1024, base = strtoull(argv[6], NULL, 0);
	uint64_t size = strtoull(argv[7], NULL, 0), rate = strtoull(argv[8], NULL, 0) * 1024;
	int fd = open(argv[1], O_WRONLY | O_DIRECT);
	void *buf;

	state = strtoull(argv[3], NULL, 0) * 2654435761u + 1;
	if (fd < 0 || minb == 0 || maxb < minb || posix_memalign(&buf, 4096, maxb)) {
		fprintf(stderr, "random-writer: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	if (size == 0 && ioctl(fd, BLKGETSIZE64, &size)) {
		perror("random-writer: BLKGETSIZE64");
		return 1;
	}
	double start = now();
	for (uint64_t done = 0; done < bytes;) {
		uint64_t len = minb * (1 + next() % (maxb / minb));
		uint64_t off = base + (next() % ((size - len) / minb + 1)) * minb;

		for (uint64_t i = 0; i < len / 8; i++)
			((uint64_t *)buf)[i] = next();
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
			perror("random-writer: pwrite");
			return 1;
		}
		done += len;
		if (rate) {
			double due = start + (double)done / rate;
			if (due > now())
				usleep((useconds_t)((due - now()) * 1e6));
		}
	}
	return close(fd) ? 1 : 0;
}
