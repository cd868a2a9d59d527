/* Second source of xisa_demo: a static function named like one in the
 * first file, a static local, heap nodes. */
#include <stdlib.h>

#include "popcorn.h"
#include "xisa_list.h"

static int twice(int v)
{
	return v + v;
}

struct node *list_push(struct node *head, int value)
{
	static int pushes;
	struct node *n;
	n = malloc(sizeof(*n));
	n->value = twice(value);
	n->next = head;
	pushes++;
	return n;
}

int list_sum(struct node *head)
{
	int sum = 0;
	while (head) {
		sum += head->value;
		head = head->next;
	}
	popcorn_migrate_point();
	return sum;
}
