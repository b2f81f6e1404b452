/* A shared object that is not a transform plugin: it lacks the capsule_transform_v1 symbol. */
int not_a_transform(int x);
int not_a_transform(int x)
{
	return x + 1;
}
