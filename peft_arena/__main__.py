from peft_arena.cli import main

main()
