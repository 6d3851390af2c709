/* The walkthrough's program: build it static so it needs nothing in the root. */
#include <stdio.h>

int main(void)
{
    puts("Hello from the container!");
    return 0;
}
