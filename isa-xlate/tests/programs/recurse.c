/* Recursion 20 deep with locals of every scalar type, arrays, structs, doubles, pointers to
 * other frames' locals, to globals and to code; migrates at depth 20 and prints a checksum of
 * everything afterwards. XLATE_SEED changes all values. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void popcorn_migrate_point(void);


struct point {
  int x;
  short s;
  char c;
  double d;
  long l;
  unsigned char tag[3];
};

struct node {
  struct node *up;
  int *pdepth;
  double *pacc;
  struct point pt;
  char name[12];
  long *ring[2];
};

enum color { RED, GREEN, BLUE };

union bits {
  long l;
  double d;
  unsigned char b[8];
};

int g_table[8] = {1, 2, 3, 4, 5, 6, 7, 8};

long mix(long h, long v) { return (h * 1000003L) ^ v; }

long recurse(int depth, struct node *parent, double acc, long seed);

int main(void) {
  const char *e = getenv("XLATE_SEED");
  long seed = e ? atol(e) : 7;
  long result = recurse(1, 0, 1.0, seed);
  printf("result %ld\n", result);
  return 0;
}

/* The call-site mismatch test builds with -DSHIFT_LINES: every call site of recurse moves. */
#ifdef SHIFT_LINES
#line 2000
#endif

long recurse(int depth, struct node *parent, double acc, long seed) {
  char c = (char)('A' + depth);
  signed char sc = (signed char)(-depth * 3);
  unsigned char uc = (unsigned char)(200 + depth);
  short s = (short)(-1000 * depth + seed);
  unsigned short us = (unsigned short)(60000 + depth);
  int i = -100000 * depth + (int)seed;
  unsigned int ui = 4000000000u + (unsigned)depth;
  long l = -10000000000L * depth - seed;
  unsigned long ul = 0xfedcba9876543210UL + (unsigned long)depth * (unsigned long)seed;
  long long ll = -123456789012345LL * depth;
  unsigned long long ull = 0x8000000000000000ULL | ((unsigned long long)seed << depth);
  float f = 1.5f * (float)depth + (float)seed;
  double d = acc * 1.25 + depth;
  _Bool b = depth & 1;
  int arr[5];
  double darr[3];
  struct point pt;
  struct node me;
  int *p_arr = &arr[depth % 5];
  long *p_up_l = parent ? parent->ring[0] : &l;
  struct node *p_up = parent;
  int *p_glob = &g_table[depth % 8];
  long (*fn)(long, long) = mix;
  enum color col = (enum color)(depth % 3);
  union bits un;
  short grid[2][3];
  int **pp = &p_arr;
  struct node *chain[2];
  long r = 0;
  un.d = acc + 0.5;
  for (int k = 0; k < 6; k++)
    grid[k / 3][k % 3] = (short)(k * depth - (int)seed);
  for (int k = 0; k < 5; k++)
    arr[k] = depth * 10 + k + (int)seed;
  for (int k = 0; k < 3; k++)
    darr[k] = d / (k + 1);
  pt.x = depth;
  pt.s = (short)(depth * 3);
  pt.c = 'p';
  pt.d = d * 2;
  pt.l = l;
  pt.tag[0] = 1;
  pt.tag[1] = (unsigned char)depth;
  pt.tag[2] = (unsigned char)seed;
  memset(&me, 0, sizeof me);
  me.up = parent;
  me.pdepth = &depth;
  me.pacc = &acc;
  me.pt = pt;
  me.name[0] = 'n';
  me.name[1] = (char)('a' + depth);
  me.ring[0] = &l;
  me.ring[1] = parent ? &parent->pt.l : &l;
  chain[0] = parent;
  chain[1] = &me;
  {
    int inner = depth * 7 + (int)seed;
    if (depth == 20)
      popcorn_migrate_point();
    else
      r = recurse(depth + 1, &me, d, seed);
    r = fn(r, inner);
  }
  long h = r;
  h = mix(h, c);
  h = mix(h, sc);
  h = mix(h, uc);
  h = mix(h, s);
  h = mix(h, us);
  h = mix(h, i);
  h = mix(h, (long)ui);
  h = mix(h, l);
  h = mix(h, (long)ul);
  h = mix(h, ll);
  h = mix(h, (long)ull);
  h = mix(h, (long)(f * 100));
  h = mix(h, (long)(d * 1000));
  h = mix(h, b);
  for (int k = 0; k < 5; k++)
    h = mix(h, arr[k]);
  for (int k = 0; k < 3; k++)
    h = mix(h, (long)(darr[k] * 1000));
  h = mix(h, pt.x + pt.s + pt.c + (long)pt.d + pt.l + pt.tag[0] + pt.tag[1] + pt.tag[2]);
  h = mix(h, *p_arr);
  h = mix(h, *p_up_l);
  h = mix(h, *me.pdepth);
  h = mix(h, (long)(*me.pacc * 1000));
  h = mix(h, me.name[1]);
  h = mix(h, *me.ring[0] + *me.ring[1]);
  if (p_up)
    h = mix(h, p_up->pt.x + *p_up->pdepth);
  h = mix(h, *p_glob);
  h = mix(h, col);
  h = mix(h, un.l);
  for (int k = 0; k < 6; k++)
    h = mix(h, grid[k / 3][k % 3]);
  h = mix(h, **pp);
  h = mix(h, chain[1]->pt.x + (chain[0] ? chain[0]->pt.x : -1));
  return h;
}

