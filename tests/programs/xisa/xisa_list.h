struct node {
	int value;
	struct node *next;
};
struct node *list_push(struct node *head, int value);
int list_sum(struct node *head);
