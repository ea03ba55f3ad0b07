/*
 * UDP flooder for the attack bench (bench/attack.ts), run inside a bed host:
 *
 *   udp-flood DST_IP PORT RATE MAX_COUNT MAX_SECONDS PAYLOAD_FILE RECORD_BYTES
 *
 * Sends the records of PAYLOAD_FILE (fixed-size, back to back, cycled) to
 * DST_IP:PORT. RATE 0: as fast as this one process goes (sendmmsg, 64 a
 * call); otherwise paced per millisecond to RATE datagrams a second. Bounded
 * in count (MAX_COUNT, at most 100M) and time (MAX_SECONDS, at most 600).
 * Prints its own counters: "sent N elapsed_ms E errors X" (a datagram counts
 * when sendmmsg says the kernel took it).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 8) {
    fprintf(stderr, "usage: udp-flood DST_IP PORT RATE MAX_COUNT MAX_SECONDS PAYLOAD_FILE RECORD_BYTES\n");
    return 2;
  }
  const char *ip = argv[1];
  int port = atoi(argv[2]);
  double rate = atof(argv[3]);
  long long max_count = atoll(argv[4]);
  double max_s = atof(argv[5]);
  int rec = atoi(argv[7]);
  if (max_count > 100000000LL) max_count = 100000000LL;
  if (max_s > 600) max_s = 600;
  if (rec <= 0 || rec > 65000) return 2;

  FILE *f = fopen(argv[6], "rb");
  if (!f) return perror("payload"), 2;
  static char buf[1 << 20];
  size_t len = fread(buf, 1, sizeof buf, f);
  fclose(f);
  int records = (int)(len / (size_t)rec);
  if (records == 0) return fprintf(stderr, "no records\n"), 2;

  int s = socket(AF_INET, SOCK_DGRAM, 0);
  if (s < 0) return perror("socket"), 2;
  int sndbuf = 4 << 20;
  setsockopt(s, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1) return fprintf(stderr, "bad ip\n"), 2;
  if (connect(s, (struct sockaddr *)&dst, sizeof dst) < 0) return perror("connect"), 2;

  struct mmsghdr msgs[BATCH];
  struct iovec iov[BATCH];
  long long sent = 0, errors = 0;
  int next = 0;
  double t0 = now_ms(), end = t0 + max_s * 1e3;
  while (sent < max_count) {
    double t = now_ms();
    if (t >= end) break;
    int n = BATCH;
    if (rate > 0) {
      /* Paced: what the rate allows by now, at most one batch per call. */
      long long due = (long long)((t - t0) * rate / 1e3) + 1 - sent;
      if (due <= 0) {
        usleep(200);
        continue;
      }
      if (due < n) n = (int)due;
    }
    if (max_count - sent < n) n = (int)(max_count - sent);
    for (int i = 0; i < n; i++) {
      iov[i].iov_base = buf + (size_t)next * (size_t)rec;
      iov[i].iov_len = (size_t)rec;
      memset(&msgs[i], 0, sizeof msgs[i]);
      msgs[i].msg_hdr.msg_iov = &iov[i];
      msgs[i].msg_hdr.msg_iovlen = 1;
      next = (next + 1) % records;
    }
    int r = sendmmsg(s, msgs, (unsigned)n, 0);
    if (r < 0) {
      errors++; /* ENOBUFS / ECONNREFUSED: nothing taken, go on */
      if (errors > 10000000) break;
      continue;
    }
    sent += r;
  }
  printf("sent %lld elapsed_ms %.0f errors %lld\n", sent, now_ms() - t0, errors);
  return 0;
}
