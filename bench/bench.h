/* df11-bench subcommands. Each takes the arguments after its name (argv[0] = the
 * subcommand) and returns an exit status: 0 ok, 1 failure, 2 usage. */
#ifndef DF11_BENCH_H
#define DF11_BENCH_H

int bench_decode_main(int argc, char **argv);   /* bench/bench_decode.c */
int bench_pipeline_main(int argc, char **argv); /* bench/bench_pipeline.c */
int bench_codec_main(int argc, char **argv);    /* bench/bench_codec.c */
int bench_matmul_main(int argc, char **argv);   /* bench/bench_matmul.c */
int bench_read_main(int argc, char **argv);     /* bench/bench_read.c */

/* Shared timing helpers (bench/bench_util.c). */
double bench_now_s(void);              /* CLOCK_MONOTONIC, seconds */
double bench_median(double *v, int n); /* sorts v */

#endif
