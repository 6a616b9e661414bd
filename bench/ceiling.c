/* The ceiling of the fork-per-connection model: accept, fork, read once,
 * write a fixed response, exit. No parsing, no keep-alive, no logging.
 * usage: ceiling PORT FILE   (listens on 127.0.0.1:PORT, serves FILE as the body) */
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s PORT FILE\n", argv[0]); return 2; }
    int fd = open(argv[2], O_RDONLY); struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { perror(argv[2]); return 1; }
    char *resp = malloc(256 + st.st_size);
    int hl = snprintf(resp, 256, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                      "Content-Length: %lld\r\nConnection: close\r\n\r\n", (long long)st.st_size);
    ssize_t len = hl, n;
    while (len < hl + st.st_size && (n = read(fd, resp + len, hl + st.st_size - len)) > 0) len += n;
    close(fd);
    struct sigaction sa = {0}; sa.sa_handler = SIG_IGN; sa.sa_flags = SA_NOCLDWAIT;
    sigaction(SIGCHLD, &sa, NULL);             /* children are reaped by the kernel */
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 1024) < 0) { perror("listen"); return 1; }
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0) continue;
        if (fork() == 0) {
            char buf[4096];
            close(ls);
            if (read(c, buf, sizeof buf) > 0)
                for (ssize_t off = 0; off < len && (n = write(c, resp + off, len - off)) > 0; off += n) {}
            _exit(0);
        }
        close(c);
    }
}
